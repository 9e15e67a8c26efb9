//! `certkeeper bench`: issuance throughput end to end through the API, against the machine's
//! raw signing rate measured in the same run.
//!
//! The server runs in this process on 127.0.0.1 with a temporary data directory; clients send
//! CSRs (generated beforehand, not timed) with `?wait=`, so each measured request covers CSR in,
//! job queued, claimed, signed, stored, and the certificate answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use ck_api_types::CreateCertificate;
use ck_domain::{KeyType, SubjectAltName};
use ck_server::ServerConfig;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::config::Settings;

#[derive(Debug, Serialize)]
struct Report {
    database: String,
    count: usize,
    concurrency: usize,
    seconds: f64,
    certificates_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    raw_p256_signatures_per_second: f64,
    ratio_to_raw_signing: f64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.count == 0 || args.count > 1_000_000 || args.concurrency == 0 || args.concurrency > 4096 {
        bail!("--count must be 1..=1000000 and --concurrency 1..=4096");
    }
    // Quiet by default (a log line per certificate would be measured too); CERTKEEPER_LOG opts in.
    if std::env::var_os("CERTKEEPER_LOG").is_some() {
        crate::serve::init_logging();
    }
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let (settings, backend) = in_process_settings(data_dir.path(), &args.database, "bench-node")?;

    let csrs = prepare_csrs(args.count, "bench.internal").await?;

    eprintln!("measuring the raw P-256 signing rate (1 s on every core)…");
    let raw_rate = tokio::task::spawn_blocking(raw_signing_rate).await??;

    let running = crate::serve::start(settings, false).await?;
    let token = std::fs::read_to_string(data_dir.path().join("admin.token"))?;
    let client = ck_client::Client::new(&format!("http://{}", running.addr), token.trim())?;

    eprintln!(
        "issuing {} certificates through the API with {} in flight ({backend})…",
        args.count, args.concurrency
    );
    let (latencies, elapsed) = issue_all(&[client], Arc::new(csrs), args.concurrency).await?;
    running.stop().await;

    let percentile = |p: f64| percentile_of(&latencies, p).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let rate = args.count as f64 / elapsed.as_secs_f64();
    let report = Report {
        database: backend,
        count: args.count,
        concurrency: args.concurrency,
        seconds: elapsed.as_secs_f64(),
        certificates_per_second: rate,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: percentile(1.0),
        raw_p256_signatures_per_second: raw_rate,
        ratio_to_raw_signing: rate / raw_rate,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} issuances on {} in {:.2} s: {:.0} certificates/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n\
             raw P-256 signing on this machine: {:.0} signatures/s; API issuance reaches {:.1}% of it",
            report.count,
            report.database,
            report.seconds,
            report.certificates_per_second,
            report.p50_ms,
            report.p99_ms,
            report.max_ms,
            report.raw_p256_signatures_per_second,
            report.ratio_to_raw_signing * 100.0
        );
    }
    Ok(())
}

/// Settings of a server run in this process for a benchmark: a temporary data directory, a
/// free loopback port, `database` (`sqlite`: a file in `data_dir`, else a postgres:// URL) and
/// no per-token rate limit (a benchmark drives the API with one token as fast as it can).
/// Returns them with the engine's name.
pub(crate) fn in_process_settings(
    data_dir: &std::path::Path,
    database: &str,
    node_id: &str,
) -> anyhow::Result<(Settings, String)> {
    let database = match database {
        "sqlite" => ck_store::DatabaseUrl::sqlite_file(&data_dir.join("certkeeper.db")),
        url => url.parse().map_err(|e| anyhow::anyhow!("--database: {e}"))?,
    };
    let backend = database.backend().as_str().to_owned();
    let settings = Settings {
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        database,
        log_format: crate::config::LogFormat::Text,
        server: ServerConfig {
            token_rate_limit: None,
            ..ServerConfig::new(node_id.to_owned())
        },
        tls: None,
        tls_client_ca: None,
        kek: crate::secrets::KekSource::File(data_dir.join("kek")),
        listener: crate::tls_listener::ListenerLimits::default(),
    };
    Ok((settings, backend))
}

/// `count` P-256 CSRs for `host<i>.<domain>`, made on a blocking thread before anything is timed.
pub(crate) async fn prepare_csrs(count: usize, domain: &str) -> anyhow::Result<Vec<String>> {
    eprintln!("preparing {count} CSRs…");
    let domain = domain.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        (0..count)
            .map(|i| {
                let names = vec![SubjectAltName::parse(&format!("host{i}.{domain}"))?];
                Ok(ck_pki::ServerKey::generate(KeyType::EcdsaP256, &names)?.csr_pem)
            })
            .collect()
    })
    .await?
}

/// The value at fraction `p` (0 to 1) of `sorted`, nearest rank; `None` when it is empty.
pub(crate) fn percentile_of<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let idx = ((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len().saturating_sub(1));
    sorted.get(idx).copied()
}

/// Creates a certificate from each CSR through the API, `concurrency` requests in flight spread
/// over `clients` (one per node), each waiting for its issuance; the latencies and the time taken.
pub(crate) async fn issue_all(
    clients: &[ck_client::Client],
    csrs: Arc<Vec<String>>,
    concurrency: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let bar = indicatif::ProgressBar::new(csrs.len() as u64);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let client = clients[task % clients.len()].clone();
        let (csrs, next, bar) = (csrs.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(csr) = csrs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let request = CreateCertificate {
                    csr: Some(csr.clone()),
                    ..CreateCertificate::default()
                };
                let sent = Instant::now();
                let answer = client
                    .create_certificate(&request, Some(Duration::from_secs(60)))
                    .await?;
                if answer.certificate.status != "active" {
                    bail!(
                        "certificate {} ended {}: {:?}",
                        answer.certificate.id,
                        answer.certificate.status,
                        answer.job.last_error
                    );
                }
                latencies.push(sent.elapsed());
                bar.inc(1);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(csrs.len());
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    latencies.sort();
    Ok((latencies, elapsed))
}

/// Signatures per second over all cores for one second: the ceiling of any issuance rate.
fn raw_signing_rate() -> anyhow::Result<f64> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
    let key = Arc::new(
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("P-256 key load failed"))?,
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs(1);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = key.clone();
            std::thread::spawn(move || {
                let rng = SystemRandom::new();
                let message = [7u8; 300];
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if key.sign(&rng, &message).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    Ok(total as f64)
}
