//! `certkeeper-bench` (no subcommand): issuance throughput end to end through the API, against
//! the machine's raw signing rate measured in the same run.
//!
//! The server runs in this process on 127.0.0.1 with a temporary data directory; clients send
//! CSRs (generated beforehand, not timed) with `?wait=`, so each measured request covers CSR in,
//! job queued, claimed, signed, stored, and the certificate answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use serde::Serialize;

use crate::figures::{Output, percentile_duration_ms};
use crate::load::{issue_all, prepare_csrs};
use crate::server::in_process_settings;

/// `certkeeper-bench` without a subcommand: issuance throughput.
#[derive(Debug, clap::Args)]
pub(crate) struct IssuanceArgs {
    /// Database to measure: sqlite (a temp file) or a postgres:// URL (an empty database).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Certificates to issue.
    #[arg(long, default_value_t = 5000)]
    pub(crate) count: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    #[command(flatten)]
    pub(crate) output: Output,
}

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

pub(crate) async fn run(args: IssuanceArgs) -> anyhow::Result<()> {
    if args.count == 0 || args.count > 1_000_000 || args.concurrency == 0 || args.concurrency > 4096 {
        bail!("--count must be 1..=1000000 and --concurrency 1..=4096");
    }
    // Quiet by default (a log line per certificate would be measured too); CERTKEEPER_LOG opts in.
    if std::env::var_os("CERTKEEPER_LOG").is_some() {
        certkeeper::serve::init_logging();
    }
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let (settings, backend) = in_process_settings(data_dir.path(), &args.database, "bench-node")?;

    let csrs = prepare_csrs(args.count, "bench.internal").await?;

    eprintln!("measuring the raw P-256 signing rate (1 s on every core)…");
    let raw_rate = tokio::task::spawn_blocking(raw_signing_rate).await??;

    let running = certkeeper::serve::start(settings, false).await?;
    let token = std::fs::read_to_string(data_dir.path().join("admin.token"))?;
    let client = ck_client::Client::new(&format!("http://{}", running.addr), token.trim())?;

    eprintln!(
        "issuing {} certificates through the API with {} in flight ({backend})…",
        args.count, args.concurrency
    );
    let (latencies, elapsed) = issue_all(&[client], Arc::new(csrs), args.concurrency).await?;
    running.stop().await;

    let rate = args.count as f64 / elapsed.as_secs_f64();
    let report = Report {
        database: backend,
        count: args.count,
        concurrency: args.concurrency,
        seconds: elapsed.as_secs_f64(),
        certificates_per_second: rate,
        p50_ms: percentile_duration_ms(&latencies, 0.50),
        p99_ms: percentile_duration_ms(&latencies, 0.99),
        max_ms: percentile_duration_ms(&latencies, 1.0),
        raw_p256_signatures_per_second: raw_rate,
        ratio_to_raw_signing: rate / raw_rate,
    };
    args.output.print(&report, print_text)
}

/// The figures as text.
fn print_text(report: &Report) {
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
