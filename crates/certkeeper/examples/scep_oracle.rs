//! Padding-oracle check of a running server's SCEP RA (security finding #4), run by
//! `scripts/scep-oracle.sh`: sends `--count` PKIOperations whose RSA key transport block has
//! valid PKCS#1 v1.5 padding (around a key that does not open the content, as a Bleichenbacher
//! attacker's modified ciphertexts have) and as many with invalid padding, in random order,
//! and prints per group the answers (HTTP status, pkiStatus, failInfo), their sizes and the
//! latency distribution, with a two-sample Kolmogorov–Smirnov test of the latencies and a sign
//! test on pairs sent one after the other.
//!
//! `--unknown-cipher` names a cipher the RA does not support, the case that once answered
//! badAlg after a good padding and badMessageCheck after a bad one.
//!
//! Exits 1 when the groups' answers differ in status, failInfo or size.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use ck_domain::KeyType;
use ck_pki::KeyBlock;
use rand::seq::SliceRandom;

struct Args {
    url: String,
    count: usize,
    challenge: String,
    unknown_cipher: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: String::new(),
        count: 1000,
        challenge: "oracle".to_owned(),
        unknown_cipher: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--count" => args.count = value()?.parse()?,
            "--challenge" => args.challenge = value()?,
            "--unknown-cipher" => args.unknown_cipher = true,
            other => bail!("unknown argument {other} (--url URL [--count N] [--challenge C] [--unknown-cipher])"),
        }
    }
    if args.url.is_empty() {
        bail!("--url http://127.0.0.1:PORT is required");
    }
    Ok(args)
}

/// One answer as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    http: u16,
    pki_status: String,
    fail_info: String,
}

#[derive(Default)]
struct Group {
    answers: BTreeMap<Seen, usize>,
    sizes: BTreeMap<usize, usize>,
    micros: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The two-sample Kolmogorov–Smirnov statistic D (largest gap between the empirical CDFs).
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let client = reqwest::Client::new();
    let scep = format!("{}/scep", args.url.trim_end_matches('/'));
    let ra = client
        .get(format!("{scep}?operation=GetCACert"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .to_vec();
    let key = ck_pki::generate_key(KeyType::Rsa2048)?;
    let csr = ck_pki::scep_csr(&key, "oracle.devices.test", Some(&args.challenge))?;

    // Valid padding: another key of the right length, or of the wrong length; invalid: three
    // ways. Made before sending, so the timings are the server's, in random order.
    let valid = [KeyBlock::ConformingOtherKey, KeyBlock::ConformingWrongLength];
    let invalid = [KeyBlock::WrongBlockType, KeyBlock::NoSeparator, KeyBlock::ShortPadding];
    // Pairs (one of each), in random order within the pair: a paired test then compares
    // requests sent one after the other, immune to the machine's load drifting over the run.
    let mut rng = rand::rng();
    let mut plan = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let mut pair = Vec::with_capacity(2);
        for block in [valid[i % valid.len()], invalid[i % invalid.len()]] {
            let tx = format!("oracle-{:06}-{}", i, u8::from(block.conforming()));
            let message = ck_pki::crafted_pkcs_req(&ra, &key, &csr, &tx, block, args.unknown_cipher)?;
            pair.push((block.conforming(), message));
        }
        pair.shuffle(&mut rng);
        plan.push(pair);
    }

    let send = |message: Vec<u8>| {
        let client = client.clone();
        let url = format!("{scep}?operation=PKIOperation");
        async move {
            // A kept-alive connection the server closed meanwhile (its idle timeout) fails
            // before any answer: sent again once on a fresh connection.
            let mut retried = false;
            loop {
                let sent = client
                    .post(&url)
                    .header("content-type", "application/x-pki-message")
                    .body(message.clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let http = response.status().as_u16();
                        let body = response.bytes().await?;
                        return anyhow::Ok((http, body));
                    }
                    Err(e) if !retried && e.is_request() => retried = true,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    };
    // Warm up the connection and the server's caches.
    for (_, message) in plan.iter().flatten().take(20) {
        send(message.clone()).await?;
    }

    let mut groups: BTreeMap<bool, Group> = BTreeMap::new();
    // Per pair: the valid-padding request's latency minus the invalid one's.
    let mut differences = Vec::with_capacity(plan.len());
    for pair in plan {
        let mut timed = [0.0f64; 2];
        for (conforming, message) in pair {
            let started = Instant::now();
            let (http, body) = send(message).await?;
            let micros = started.elapsed().as_secs_f64() * 1e6;
            let seen = match ck_pki::read_cert_rep(&body, &key) {
                Ok(rep) => Seen {
                    http,
                    pki_status: rep.status,
                    fail_info: rep.fail_info.unwrap_or_else(|| "-".to_owned()),
                },
                Err(_) => Seen {
                    http,
                    pki_status: "not a CertRep".to_owned(),
                    fail_info: "-".to_owned(),
                },
            };
            let group = groups.entry(conforming).or_default();
            *group.answers.entry(seen).or_default() += 1;
            *group.sizes.entry(body.len()).or_default() += 1;
            group.micros.push(micros);
            timed[usize::from(conforming)] = micros;
        }
        differences.push(timed[1] - timed[0]);
    }

    println!(
        "SCEP padding-oracle check: {} envelopes with valid PKCS#1 v1.5 padding, {} with invalid, in pairs in random order{}",
        args.count,
        args.count,
        if args.unknown_cipher {
            ", unsupported content cipher named"
        } else {
            ""
        }
    );
    println!(
        "{:<16} {:<34} {:<16} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "padding",
        "answers (http/pkiStatus/failInfo)",
        "sizes (bytes)",
        "p10 µs",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "mean µs"
    );
    for (conforming, group) in &mut groups {
        group.micros.sort_by(f64::total_cmp);
        let answers: Vec<String> = group
            .answers
            .iter()
            .map(|(s, n)| format!("{}/{}/{} ×{n}", s.http, s.pki_status, s.fail_info))
            .collect();
        let sizes: Vec<String> = group.sizes.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        let mean = group.micros.iter().sum::<f64>() / group.micros.len() as f64;
        println!(
            "{:<16} {:<34} {:<16} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0}",
            if *conforming { "valid" } else { "invalid" },
            answers.join(", "),
            sizes.join(", "),
            percentile(&group.micros, 0.10),
            percentile(&group.micros, 0.50),
            percentile(&group.micros, 0.90),
            percentile(&group.micros, 0.99),
            mean,
        );
    }
    let (Some(valid), Some(invalid)) = (groups.get(&true), groups.get(&false)) else {
        bail!("no answers");
    };
    let d = ks_statistic(&valid.micros, &invalid.micros);
    let (n, m) = (valid.micros.len() as f64, invalid.micros.len() as f64);
    let critical = 1.358 * ((n + m) / (n * m)).sqrt();
    println!(
        "latency, unpaired: Kolmogorov–Smirnov D = {d:.4} (critical value at α = 0.05: {critical:.4}; sensitive to load drift)"
    );
    // Sign test on the pairs: with no timing signal, the valid-padding request is the slower
    // one of its pair half of the time.
    differences.sort_by(f64::total_cmp);
    let pairs = differences.len() as f64;
    let slower = differences.iter().filter(|d| **d > 0.0).count() as f64;
    let z = (slower - pairs / 2.0) / (pairs / 4.0).sqrt();
    println!(
        "latency, paired: valid padding slower in {slower} of {pairs} pairs, z = {z:.2}; median difference {:.0} µs \
         (p25 {:.0}, p75 {:.0}) → {}",
        percentile(&differences, 0.50),
        percentile(&differences, 0.25),
        percentile(&differences, 0.75),
        if z.abs() < 1.96 {
            "no timing difference (sign test, α = 0.05)"
        } else {
            "TIMING DIFFERS (sign test, α = 0.05)"
        }
    );
    let same_answers = valid.answers.keys().eq(invalid.answers.keys()) && valid.sizes.keys().eq(invalid.sizes.keys());
    println!(
        "answers: {}",
        if same_answers {
            "identical sets of (status, failInfo) and sizes in both groups"
        } else {
            "DIFFER between the groups: a padding oracle"
        }
    );
    if !same_answers {
        std::process::exit(1);
    }
    Ok(())
}
