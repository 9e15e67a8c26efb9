//! `certkeeper-bench crl`: how long the local CA takes to sign a CRL with many revoked serials,
//! and how large it is, with `openssl crl` parsing the result as a reference figure.

use std::time::Instant;

use anyhow::{Context, bail};
use ck_domain::RevocationReason;
use ck_pki::{CaConfig, CaMaterial, CrlRequest, LocalCa, RevokedSerial};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::figures::Output;

/// `certkeeper-bench crl`.
#[derive(Debug, clap::Args)]
pub(crate) struct CrlArgs {
    /// Revoked serials per CRL (repeatable; 1 to 5000000 each).
    #[arg(long = "entries", default_values_t = [100_000usize, 1_000_000])]
    pub(crate) entries: Vec<usize>,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Serialize)]
struct Row {
    entries: usize,
    sign_seconds: f64,
    bytes: usize,
    bytes_per_entry: f64,
    openssl_parse_seconds: Option<f64>,
}

pub(crate) async fn run(args: CrlArgs) -> anyhow::Result<()> {
    if args.entries.is_empty() || args.entries.iter().any(|n| *n == 0 || *n > 5_000_000) {
        bail!("--entries must be between 1 and 5000000");
    }
    let rows = tokio::task::spawn_blocking(move || measure(&args.entries))
        .await
        .context("the benchmark stopped")??;
    args.output.print(rows.as_slice(), print_text)
}

/// The figures as a table, a row per CRL.
fn print_text(rows: &[Row]) {
    println!(
        "{:>10} {:>10} {:>12} {:>10} {:>14}",
        "entries", "sign s", "bytes", "B/entry", "openssl parse s"
    );
    for row in rows {
        println!(
            "{:>10} {:>10.3} {:>12} {:>10.1} {:>14}",
            row.entries,
            row.sign_seconds,
            row.bytes,
            row.bytes_per_entry,
            row.openssl_parse_seconds.map_or("-".to_owned(), |s| format!("{s:.3}"))
        );
    }
}

fn measure(sizes: &[usize]) -> anyhow::Result<Vec<Row>> {
    let now = OffsetDateTime::now_utc();
    let ca = LocalCa::load(&CaMaterial::create(&CaConfig::default(), now)?)?;
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for &n in sizes {
        let revoked = serials(n, now)?;
        let request = CrlRequest {
            number: 1,
            this_update: now,
            next_update: now + Duration::hours(24),
            revoked: &revoked,
        };
        eprintln!("signing a CRL with {n} entries…");
        let started = Instant::now();
        let der = ca.sign_crl(&request)?;
        let sign_seconds = started.elapsed().as_secs_f64();
        let path = dir.path().join(format!("{n}.crl"));
        std::fs::write(&path, &der)?;
        let started = Instant::now();
        let parsed = std::process::Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-in"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        let openssl_parse_seconds = parsed.then(|| started.elapsed().as_secs_f64());
        rows.push(Row {
            entries: n,
            sign_seconds,
            bytes: der.len(),
            bytes_per_entry: der.len() as f64 / n as f64,
            openssl_parse_seconds,
        });
    }
    Ok(rows)
}

/// `n` random 16-octet serials like the CA's, revoked at `now` with varied reasons.
fn serials(n: usize, now: OffsetDateTime) -> anyhow::Result<Vec<RevokedSerial>> {
    let mut bytes = vec![0u8; n * 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system RNG failed"))?;
    Ok(bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let mut serial = chunk.to_vec();
            serial[0] = (serial[0] & 0x7f) | 0x40;
            RevokedSerial {
                serial_hex: serial.iter().map(|b| format!("{b:02x}")).collect(),
                revoked_at: now,
                reason: RevocationReason::ALL[i % RevocationReason::ALL.len()],
            }
        })
        .collect())
}
