//! `certkeeper-bench ui`: how long the web UI's pages take to render with a large inventory.
//! A server runs in this process on 127.0.0.1 (SQLite or PostgreSQL); N certificates are
//! issued through the API first (not timed), then each page is fetched again and again with a
//! signed-in session and the server's answer time is recorded. The API's own list of 50 is
//! measured the same way, as the reference the pages are compared with.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::figures::{Output, percentile_duration_ms};
use crate::load::{issue_all, prepare_csrs};
use crate::server::in_process_settings;

/// `certkeeper-bench ui`.
#[derive(Debug, clap::Args)]
pub(crate) struct UiArgs {
    /// Database to measure: sqlite (a temp file) or a postgres:// URL (an empty database).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Certificates in the inventory (1 to 100000).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) certificates: usize,
    /// Fetches per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub(crate) rounds: usize,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Serialize)]
struct PageFigures {
    page: String,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    database: String,
    certificates: usize,
    rounds: usize,
    pages: Vec<PageFigures>,
}

pub(crate) async fn run(args: UiArgs) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&args.certificates) || !(1..=1000).contains(&args.rounds) {
        bail!("--certificates must be 1..=100000 and --rounds 1..=1000");
    }
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let (settings, backend) = in_process_settings(data_dir.path(), &args.database, "bench-ui")?;
    let csrs = prepare_csrs(args.certificates, "ui.bench").await?;
    let running = certkeeper::serve::start(settings, false).await?;
    let base = format!("http://{}", running.addr);
    let token = std::fs::read_to_string(data_dir.path().join("admin.token"))?;
    let token = token.trim().to_owned();
    let client = ck_client::Client::new(&base, &token)?;
    eprintln!("issuing {} certificates (not timed)…", args.certificates);
    issue_all(&[client], Arc::new(csrs), 64).await?;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = format!("{}={token}", ck_web::SESSION_COOKIE);
    let detail = {
        let page: serde_json::Value = http
            .get(format!("{base}/api/v1/certificates?limit=1"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        page["items"][0]["id"].as_str().unwrap_or_default().to_owned()
    };
    let middle = args.certificates.div_ceil(50) / 2 + 1;
    let pages = [
        (
            "API list of 50 (reference)".to_owned(),
            "/api/v1/certificates?limit=50".to_owned(),
        ),
        ("dashboard".to_owned(), "/ui".to_owned()),
        ("certificates, by expiry".to_owned(), "/ui/certificates".to_owned()),
        (
            format!("certificates, page {middle}"),
            format!("/ui/certificates?page={middle}"),
        ),
        (
            "certificates, by name".to_owned(),
            "/ui/certificates?sort=name".to_owned(),
        ),
        (
            "certificates, search".to_owned(),
            "/ui/certificates?q=host4242".to_owned(),
        ),
        (
            "certificates, active".to_owned(),
            "/ui/certificates?status=active".to_owned(),
        ),
        ("certificate detail".to_owned(), format!("/ui/certificates/{detail}")),
        ("jobs".to_owned(), "/ui/jobs".to_owned()),
        ("audit".to_owned(), "/ui/audit".to_owned()),
    ];
    let mut figures = Vec::new();
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(args.rounds);
        let mut bytes = 0;
        for _ in 0..args.rounds {
            let started = Instant::now();
            let answer = http
                .get(format!("{base}{path}"))
                .header(reqwest::header::COOKIE, &cookie)
                .bearer_auth(&token)
                .send()
                .await?;
            let status = answer.status();
            let body = answer.bytes().await?;
            times.push(started.elapsed());
            if !status.is_success() {
                bail!("{path} answered {status}");
            }
            bytes = body.len();
        }
        times.sort();
        let ms = |p: f64| percentile_duration_ms(&times, p);
        figures.push(PageFigures {
            page: name.clone(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
            bytes,
        });
    }
    running.stop().await;
    let report = Report {
        database: backend,
        certificates: args.certificates,
        rounds: args.rounds,
        pages: figures,
    };
    args.output.print(&report, print_text)
}

/// The figures as text, a line per page.
fn print_text(report: &Report) {
    println!(
        "web UI with {} certificates on {}, {} fetches per page (time to the whole answer):",
        report.certificates, report.database, report.rounds
    );
    for page in &report.pages {
        println!(
            "  {:<32} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  {:>7} bytes",
            page.page, page.p50_ms, page.p99_ms, page.max_ms, page.bytes
        );
    }
}
