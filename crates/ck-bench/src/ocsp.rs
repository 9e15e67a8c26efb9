//! `certkeeper-bench ocsp`: the local CA's OCSP responder against `openssl ocsp` as a responder,
//! on the same certificates, in the same run.
//!
//! The server runs as a child process (`certkeeper serve` on 127.0.0.1 with a temporary data
//! directory, started as `agents` does), so its CPU time is its own. The setup issues
//! `--certs` certificates through the API and revokes every 10th (keyCompromise). The
//! intermediate's certificate and key are read from the server's database, and an OpenSSL
//! `index.txt` lists the same serials, so `openssl ocsp -index` answers for the same certificates,
//! signing with the intermediate itself. The DER requests are made by `openssl ocsp -reqout` for
//! up to 200 of the certificates (every 10th of them revoked), once without and once with a nonce.
//!
//! Three targets are measured one after the other, each for `--seconds` after a short warm-up,
//! with `--concurrency` POSTs in flight over one keep-alive client, the requests round-robin:
//! (a) certkeeper with the nonce-less requests, answered from its cache without a signature;
//! (b) certkeeper with the nonce requests, each signed fresh with the nonce echoed;
//! (c) `openssl ocsp` with the nonce requests (it has no cache: it signs every answer anyway).
//! Before a target is measured every request is sent to it once and the answer checked: a
//! successful OCSP response with one answer for the asked serial, good or revoked
//! (keyCompromise) as expected, and the nonce echoed (or absent); `openssl ocsp -respin
//! -resp_text` reads one good and one revoked answer of each target as an independent check.
//! That pass also fills the cache that (a) measures. During the load every answer is checked
//! the same way (serial and status, read from the DER); a wrong one counts as an error.
//!
//! `openssl ocsp -port` binds every interface, so `scripts/bench-ocsp.sh` runs all of this in a
//! fresh network namespace. This is a benchmark: it reports what it saw and asserts nothing
//! about timings.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ck_api_types::CreateCertificate;
use ck_client::Client;
use reqwest::StatusCode;
use reqwest::header::{CONNECTION, CONTENT_TYPE};
use serde::Serialize;
use time::OffsetDateTime;

use crate::figures::{
    Output, clock_ticks_per_second, cpu_seconds_of, micros, percentile_ms, plain_table, process_cpu_seconds,
    process_cpu_seconds_self, stat_fields,
};
use crate::load::bounded;
use crate::server::ServerProcess;

/// `certkeeper-bench ocsp`.
#[derive(Debug, clap::Args)]
pub(crate) struct OcspArgs {
    /// Certificates to issue (1 to 100000); every 10th is revoked.
    #[arg(long, default_value_t = 1000)]
    pub(crate) certs: usize,
    /// Requests in flight at once (1 to 1024).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Seconds measured per target (1 to 60).
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    #[command(flatten)]
    pub(crate) output: Output,
}

/// Every n-th certificate is revoked.
const REVOKE_EVERY: usize = 10;
/// Distinct requests (certificates asked about) per target at most.
const MAX_PROBES: usize = 200;
/// Load before each measured window, not counted (connections opened, caches warm).
const WARMUP: Duration = Duration::from_millis(500);
/// `openssl ocsp -multi`: responder processes (one per core of the reference machine).
const OPENSSL_WORKERS: u32 = 2;
/// How long each certificate's issuance may take during the setup.
const ISSUE_WAIT: Duration = Duration::from_secs(120);
/// How long `openssl ocsp` may take to answer its first request.
const READY_WAIT: Duration = Duration::from_secs(15);
/// The OID of the OCSP nonce extension (1.3.6.1.5.5.7.48.1.2), DER with its tag and length.
const NONCE_OID_DER: [u8; 11] = [0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];

const GOAL_CACHED_PER_SECOND: f64 = 15_000.0;
const GOAL_RATIO_TO_OPENSSL: f64 = 20.0;

#[derive(Debug, Serialize)]
struct Report {
    certificates: usize,
    revoked: usize,
    distinct_requests: usize,
    concurrency: usize,
    seconds_per_target: u64,
    warmup_seconds: f64,
    machine_cores: usize,
    setup_seconds: f64,
    openssl_version: String,
    openssl_command: String,
    /// `-multi` workers, or none when this openssl lacks the option.
    openssl_workers: Option<u32>,
    notes: Vec<String>,
    targets: Vec<TargetReport>,
    /// (a) / (c) in responses per second.
    ratio_cached_to_openssl: Option<f64>,
    /// (b) / (c) in responses per second.
    ratio_fresh_to_openssl: Option<f64>,
    goals: Vec<Goal>,
}

#[derive(Debug, Serialize)]
struct TargetReport {
    target: &'static str,
    description: &'static str,
    url: String,
    /// Requests sent in the measured window (answered or failed).
    requests: usize,
    responses: usize,
    errors: usize,
    first_error: Option<String>,
    responses_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Responses after which the responder closed the connection (a new one follows).
    connections_closed_by_responder: usize,
    /// The responder's processes, CPU cores averaged over the window.
    responder_cpu_cores: f64,
    /// Responses per second of the responder's CPU time: its cost, apart from the cores that
    /// the load generator takes on the same machine.
    responses_per_responder_cpu_second: Option<f64>,
    /// This process (the load generator, on the same machine), CPU cores over the window.
    generator_cpu_cores: f64,
    /// Every other process of the machine (`/proc/stat` busy time less the two above), CPU
    /// cores over the window: what competed with the measurement.
    other_cpu_cores: f64,
}

#[derive(Debug, Serialize)]
struct Goal {
    goal: String,
    met: bool,
}

/// A certificate of the setup, as openssl's `index.txt` needs it.
struct Issued {
    common_name: String,
    /// Upper-case hex, whole octets, no leading zero octet (OpenSSL's `BN_bn2hex` form).
    serial: String,
    not_after: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
}

/// One certificate the load asks about, with its two DER requests.
struct Probe {
    /// As OpenSSL prints it (upper-case hex).
    serial: String,
    /// The INTEGER's content octets, as a response's CertID carries them.
    serial_der: Vec<u8>,
    revoked: bool,
    cached_request: Vec<u8>,
    nonce_request: Vec<u8>,
}

/// Whose CPU time a target's responder uses.
#[derive(Clone, Copy)]
enum Responder {
    /// One process (certkeeper serve).
    Process(u32),
    /// A process group (`openssl ocsp -multi`: a parent and its workers).
    Group(u32),
}

struct Target {
    key: &'static str,
    description: &'static str,
    url: String,
    nonce: bool,
    responder: Responder,
}

pub(crate) async fn run(args: OcspArgs) -> anyhow::Result<()> {
    // On SIGINT or SIGTERM the benchmark's future is dropped, so the guards stop openssl (its
    // own process group: a terminal's Ctrl-C does not reach it) and the server.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        result = bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; openssl and the server are stopped"),
        _ = terminate.recv() => bail!("terminated; openssl and the server are stopped"),
    }
}

async fn bench(args: OcspArgs) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&args.certs)
        || !(1..=1024).contains(&args.concurrency)
        || !(1..=60).contains(&args.seconds)
    {
        bail!("--certs must be 1..=100000, --concurrency 1..=1024 and --seconds 1..=60");
    }
    let openssl_version = openssl_version()?;
    let openssl_workers = openssl_supports_multi().then_some(OPENSSL_WORKERS);
    let mut notes = Vec::new();
    if openssl_workers.is_none() {
        notes.push(format!(
            "{openssl_version} has no `ocsp -multi`: its responder ran as one process"
        ));
    }
    if let Some(interfaces) = other_network_interfaces() {
        eprintln!(
            "warning: this network namespace has interfaces besides lo ({interfaces}); `openssl ocsp -port` binds \
             all of them for the run. scripts/bench-ocsp.sh runs the benchmark in a private namespace."
        );
    }
    let clock_ticks = clock_ticks_per_second();
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let work_dir = tempfile::tempdir().context("cannot create a temporary work directory")?;
    let work = work_dir.path();

    // Declared after the directories, so it is dropped (and the server stopped) before them.
    let mut server = ServerProcess::start(data_dir.path(), None, &[])?;
    let (base_url, admin_token) = server.wait_ready(data_dir.path()).await?;
    let admin = Client::new(&base_url, &admin_token)?;
    let n = args.certs;
    eprintln!(
        "issuing {n} certificates, revoking every {REVOKE_EVERY}th (server pid {}, {base_url})…",
        server.pid
    );
    let started = Instant::now();
    let issued = issue_certificates(&admin, n).await?;
    let setup_seconds = started.elapsed().as_secs_f64();

    let (intermediate_pem, intermediate_key) = intermediate(data_dir.path()).await?;
    std::fs::write(work.join("int.pem"), &intermediate_pem).context("cannot write int.pem")?;
    certkeeper::files::write_atomic(&work.join("int.key"), intermediate_key.as_bytes(), 0o600)?;
    let index = issued.iter().map(index_line).collect::<anyhow::Result<String>>()?;
    std::fs::write(work.join("index.txt"), index).context("cannot write index.txt")?;

    let k = n.min(MAX_PROBES);
    let probes = Arc::new(make_probes(work, &issued, k).await?);
    let revoked = issued.iter().filter(|c| c.revoked_at.is_some()).count();
    drop(issued);

    let port = free_port()?;
    let mut openssl = OpensslResponder::start(work, port, openssl_workers)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let openssl_url = format!("http://127.0.0.1:{port}/");
    let first = probes.first().context("no request to send")?;
    openssl.wait_ready(&http, &openssl_url, &first.nonce_request).await?;

    let ours = format!("{base_url}/pki/ocsp/local");
    let targets = [
        Target {
            key: "certkeeper_cached",
            description: "(a) certkeeper, cached (no nonce)",
            url: ours.clone(),
            nonce: false,
            responder: Responder::Process(server.pid),
        },
        Target {
            key: "certkeeper_fresh",
            description: "(b) certkeeper, signed fresh (nonce)",
            url: ours,
            nonce: true,
            responder: Responder::Process(server.pid),
        },
        Target {
            key: "openssl",
            description: "(c) openssl ocsp (nonce)",
            url: openssl_url,
            nonce: true,
            responder: Responder::Group(openssl.pgid),
        },
    ];
    for target in &targets {
        check_target(&http, target, &probes, work).await?;
    }
    let mut reports = Vec::new();
    for target in &targets {
        eprintln!(
            "measuring {} for {} s ({} in flight, {k} distinct requests)…",
            target.description, args.seconds, args.concurrency
        );
        let window = measure(
            &http,
            target,
            &probes,
            args.concurrency,
            Duration::from_secs(args.seconds),
            clock_ticks,
        )
        .await?;
        reports.push(window.report(target, args.seconds));
    }
    let openssl_command = openssl.command_line();
    drop(openssl);
    drop(server);

    let rate = |key: &str| {
        reports
            .iter()
            .find(|r| r.target == key)
            .map_or(0.0, |r| r.responses_per_second)
    };
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let (cached, fresh, reference) = (rate("certkeeper_cached"), rate("certkeeper_fresh"), rate("openssl"));
    let ratio_cached_to_openssl = ratio(cached, reference);
    let ratio_fresh_to_openssl = ratio(fresh, reference);
    let goals = vec![
        Goal {
            goal: format!("(a) cached ≥ {GOAL_CACHED_PER_SECOND:.0} responses/s"),
            met: cached >= GOAL_CACHED_PER_SECOND,
        },
        Goal {
            goal: format!("(a) cached ≥ {GOAL_RATIO_TO_OPENSSL:.0}× openssl's responder (c)"),
            met: ratio_cached_to_openssl.is_some_and(|r| r >= GOAL_RATIO_TO_OPENSSL),
        },
    ];
    if let Some(busiest) = reports.iter().map(|r| r.other_cpu_cores).reduce(f64::max)
        && busiest > 0.2
    {
        notes.push(format!(
            "other processes used up to {busiest:.2} cores during a window (\"other CPU\"): the figures are lower than \
             this machine gives when it is otherwise idle"
        ));
    }
    if reports.iter().any(|r| r.errors > 0) {
        notes.push("some requests failed: the figures above leave them out (see first_error)".to_owned());
    }
    let report = Report {
        certificates: n,
        revoked,
        distinct_requests: k,
        concurrency: args.concurrency,
        seconds_per_target: args.seconds,
        warmup_seconds: WARMUP.as_secs_f64(),
        machine_cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
        setup_seconds,
        openssl_version,
        openssl_command,
        openssl_workers,
        notes,
        targets: reports,
        ratio_cached_to_openssl,
        ratio_fresh_to_openssl,
        goals,
    };
    args.output.print(&report, print_table)
}

fn print_table(r: &Report) {
    println!(
        "{} certificates ({} revoked), {} distinct requests per target, {} in flight, {} s per target after {:.1} s \
         of warm-up, {} cores (load generator on the same machine)",
        r.certificates,
        r.revoked,
        r.distinct_requests,
        r.concurrency,
        r.seconds_per_target,
        r.warmup_seconds,
        r.machine_cores
    );
    println!("{}: {}", r.openssl_version, r.openssl_command);
    let mut table = plain_table();
    table.set_header(vec![
        "target",
        "responses/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "closed conns",
        "responder CPU",
        "per responder CPU-s",
        "generator CPU",
        "other CPU",
    ]);
    for t in &r.targets {
        table.add_row(vec![
            t.description.to_owned(),
            format!("{:.0}", t.responses_per_second),
            format!("{:.2}", t.p50_ms),
            format!("{:.2}", t.p99_ms),
            format!("{:.2}", t.max_ms),
            format!("{} of {}", t.errors, t.requests),
            t.connections_closed_by_responder.to_string(),
            format!("{:.2} cores", t.responder_cpu_cores),
            t.responses_per_responder_cpu_second
                .map_or("-".to_owned(), |r| format!("{r:.0}")),
            format!("{:.2} cores", t.generator_cpu_cores),
            format!("{:.2} cores", t.other_cpu_cores),
        ]);
    }
    println!("{table}");
    for t in &r.targets {
        if let Some(error) = &t.first_error {
            println!("first error of {}: {error}", t.description);
        }
    }
    let show = |ratio: Option<f64>| ratio.map_or("n/a (openssl answered nothing)".to_owned(), |r| format!("{r:.1}×"));
    println!(
        "ratio (a)/(c) cached vs openssl:       {}",
        show(r.ratio_cached_to_openssl)
    );
    println!(
        "ratio (b)/(c) fresh-signed vs openssl: {}",
        show(r.ratio_fresh_to_openssl)
    );
    for goal in &r.goals {
        println!("goal: {} → {}", goal.goal, if goal.met { "met" } else { "not met" });
    }
    for note in &r.notes {
        println!("note: {note}");
    }
}

/// Issues `n` certificates with server-made keys and revokes every `REVOKE_EVERY`th.
async fn issue_certificates(admin: &Client, n: usize) -> anyhow::Result<Vec<Issued>> {
    bounded("issuing certificates", n, {
        let admin = admin.clone();
        move |i| {
            let admin = admin.clone();
            async move {
                let common_name = format!("ocsp-{i}.bench.internal");
                let request = CreateCertificate {
                    common_name: Some(common_name.clone()),
                    ..CreateCertificate::default()
                };
                let created = admin
                    .create_certificate(&request, Some(ISSUE_WAIT))
                    .await
                    .with_context(|| format!("cannot create the certificate {common_name}"))?
                    .certificate;
                if created.status != "active" {
                    bail!(
                        "certificate {common_name} is {} after the wait: {}",
                        created.status,
                        created.last_error.as_deref().unwrap_or("no error recorded")
                    );
                }
                let serial = openssl_serial(
                    created
                        .serial
                        .as_deref()
                        .with_context(|| format!("certificate {common_name} has no serial"))?,
                )?;
                let not_after = created
                    .not_after
                    .with_context(|| format!("certificate {common_name} has no expiry"))?;
                let revoked_at = if i % REVOKE_EVERY == 0 {
                    let revoked = admin
                        .revoke(&created.id, Some("keyCompromise"), None)
                        .await
                        .with_context(|| format!("cannot revoke {common_name}"))?;
                    Some(revoked.revoked_at.unwrap_or_else(OffsetDateTime::now_utc))
                } else {
                    None
                };
                Ok(Issued {
                    common_name,
                    serial,
                    not_after,
                    revoked_at,
                })
            }
        }
    })
    .await
}

/// The `local` issuer's intermediate certificate and key, read from the server's database
/// (decrypted with the key-encryption key in its data directory).
async fn intermediate(data_dir: &Path) -> anyhow::Result<(String, String)> {
    let database = data_dir.join("certkeeper.db");
    let cipher = certkeeper::secrets::load_cipher(&certkeeper::secrets::KekSource::File(data_dir.join("kek")))?;
    let store = ck_store::Store::connect(&ck_store::DatabaseUrl::sqlite_file(&database), cipher)
        .await
        .with_context(|| format!("cannot open the server's database {}", database.display()))?;
    let issuers = store.issuers().await;
    store.close().await;
    let local = issuers
        .context("cannot read the issuers")?
        .into_iter()
        .find(|issuer| issuer.id == "local")
        .context("the server has no `local` issuer")?;
    match (local.intermediate_cert_pem, local.intermediate_key_pem) {
        (Some(cert), Some(key)) => Ok((cert, key)),
        _ => bail!("the `local` issuer has no intermediate certificate and key"),
    }
}

/// One `index.txt` line (OpenSSL's CA database): status, expiry, revocation, serial, file, DN.
fn index_line(cert: &Issued) -> anyhow::Result<String> {
    let expiry = openssl_time(cert.not_after)?;
    let revocation = match cert.revoked_at {
        Some(at) => format!("{},keyCompromise", openssl_time(at)?),
        None => String::new(),
    };
    let status = if cert.revoked_at.is_some() { 'R' } else { 'V' };
    Ok(format!(
        "{status}\t{expiry}\t{revocation}\t{}\tunknown\t/CN={}\n",
        cert.serial, cert.common_name
    ))
}

/// `YYMMDDHHMMSSZ` in UTC, as `index.txt` writes times.
fn openssl_time(at: OffsetDateTime) -> anyhow::Result<String> {
    let format = time::macros::format_description!("[year repr:last_two][month][day][hour][minute][second]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .context("cannot format a time for index.txt")
}

/// A hex serial as OpenSSL prints and indexes it: upper case, whole octets, no leading zero octet.
fn openssl_serial(hex: &str) -> anyhow::Result<String> {
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("serial '{hex}' is not hex");
    }
    let digits = hex.trim_start_matches('0');
    let serial = match digits.len() {
        0 => "00".to_owned(),
        len if len % 2 == 1 => format!("0{digits}"),
        _ => digits.to_owned(),
    };
    Ok(serial.to_ascii_uppercase())
}

/// The DER requests for the first `k` certificates, made by `openssl ocsp -reqout`.
async fn make_probes(work: &Path, issued: &[Issued], k: usize) -> anyhow::Result<Vec<Probe>> {
    let wanted: Arc<Vec<(String, bool)>> = Arc::new(
        issued
            .iter()
            .take(k)
            .map(|c| (c.serial.clone(), c.revoked_at.is_some()))
            .collect(),
    );
    let work = work.to_owned();
    bounded("making requests with openssl", wanted.len(), move |i| {
        let (wanted, work) = (wanted.clone(), work.clone());
        async move {
            let (serial, revoked) = wanted.get(i).cloned().context("request index out of range")?;
            let cached_request = openssl_request(&work, &serial, false, i).await?;
            let nonce_request = openssl_request(&work, &serial, true, i).await?;
            if nonce_extension(&cached_request).is_some() || nonce_extension(&nonce_request).is_none() {
                bail!("openssl's requests for serial {serial}: -no_nonce should leave the nonce out, the default put one in");
            }
            Ok(Probe {
                serial_der: serial_octets(&serial)?,
                serial,
                revoked,
                cached_request,
                nonce_request,
            })
        }
    })
    .await
}

async fn openssl_request(work: &Path, serial: &str, nonce: bool, i: usize) -> anyhow::Result<Vec<u8>> {
    let file = work.join(format!("request-{i}-{}.der", if nonce { "nonce" } else { "plain" }));
    let mut command = tokio::process::Command::new("openssl");
    command
        .current_dir(work)
        .args(["ocsp", "-issuer", "int.pem", "-serial", &format!("0x{serial}")]);
    if !nonce {
        command.arg("-no_nonce");
    }
    let output = command
        .arg("-reqout")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run openssl ocsp -reqout")?;
    if !output.status.success() {
        bail!(
            "openssl ocsp -reqout for serial {serial} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let der = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let _ = std::fs::remove_file(&file);
    Ok(der)
}

/// Sends every probe's request to the target once and checks the answer: a successful OCSP
/// response, the nonce echoed (or absent), and openssl reading the expected serial and status.
async fn check_target(
    http: &reqwest::Client,
    target: &Target,
    probes: &Arc<Vec<Probe>>,
    work: &Path,
) -> anyhow::Result<()> {
    let label = format!("checking the answers of {}", target.description);
    let first_good = probes.iter().position(|p| !p.revoked);
    let first_revoked = probes.iter().position(|p| p.revoked);
    let (http, probes, work) = (http.clone(), probes.clone(), work.to_owned());
    let (url, key, nonce) = (target.url.clone(), target.key, target.nonce);
    bounded(&label, probes.len(), move |i| {
        let (http, probes, work, url) = (http.clone(), probes.clone(), work.clone(), url.clone());
        async move {
            let probe = probes.get(i).context("request index out of range")?;
            let request = if nonce {
                &probe.nonce_request
            } else {
                &probe.cached_request
            };
            let openssl_reads = (Some(i) == first_good || Some(i) == first_revoked)
                .then(|| work.join(format!("response-{key}-{i}.der")));
            check_answer(&http, &url, request, probe, openssl_reads.as_deref())
                .await
                .with_context(|| format!("{key}: the answer for serial {} is wrong", probe.serial))
        }
    })
    .await
    .map(|_| ())
}

async fn check_answer(
    http: &reqwest::Client,
    url: &str,
    request: &[u8],
    probe: &Probe,
    openssl_reads: Option<&Path>,
) -> anyhow::Result<()> {
    let Answer { status, body, .. } = post(http, url, request.to_vec()).await.map_err(anyhow::Error::msg)?;
    if status != StatusCode::OK {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    if let Err(error) = check_body(&body, probe) {
        bail!("{error}");
    }
    match nonce_extension(request) {
        Some(nonce) if !contains(&body, nonce) => bail!("the request's nonce is not echoed"),
        None if nonce_extension(&body).is_some() => bail!("a nonce in the answer to a request without one"),
        _ => {}
    }
    let Some(file) = openssl_reads else {
        return Ok(());
    };
    std::fs::write(file, &body).with_context(|| format!("cannot write {}", file.display()))?;
    let output = tokio::process::Command::new("openssl")
        .args(["ocsp", "-resp_text", "-noverify", "-respin"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run openssl ocsp -respin")?;
    let _ = std::fs::remove_file(file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "openssl ocsp -respin cannot read it ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let expected = if probe.revoked { "revoked" } else { "good" };
    if !text.contains(&format!("Serial Number: {}", probe.serial))
        || !text.contains(&format!("Cert Status: {expected}"))
        || (probe.revoked && !text.contains("keyCompromise"))
    {
        bail!(
            "expected {expected}{} for serial {}; openssl reads:\n{text}",
            if probe.revoked { " (keyCompromise)" } else { "" },
            probe.serial
        );
    }
    Ok(())
}

/// A responder's answer to one POST.
struct Answer {
    status: StatusCode,
    /// Whether the responder closes the connection after it.
    closed: bool,
    body: bytes::Bytes,
}

/// One POST of a DER request, read to the last byte; or why it failed.
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Answer, String> {
    let response = http
        .post(url)
        .header(CONTENT_TYPE, "application/ocsp-request")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {}", error_chain(&e)))?;
    let status = response.status();
    let closed = closes_connection(&response);
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("read: {}", error_chain(&e)))?;
    Ok(Answer { status, closed, body })
}

/// What one load task saw in the measured window.
#[derive(Default)]
struct Tally {
    /// Latencies of good answers, in microseconds.
    latencies: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
    closed: usize,
}

struct Window {
    tally: Tally,
    responder_cpu_cores: f64,
    generator_cpu_cores: f64,
    other_cpu_cores: f64,
}

impl Window {
    fn report(mut self, target: &Target, seconds: u64) -> TargetReport {
        let latencies = &mut self.tally.latencies;
        latencies.sort_unstable();
        TargetReport {
            target: target.key,
            description: target.description,
            url: target.url.clone(),
            requests: latencies.len() + self.tally.errors,
            responses: latencies.len(),
            errors: self.tally.errors,
            first_error: self.tally.first_error.take(),
            responses_per_second: latencies.len() as f64 / seconds as f64,
            p50_ms: percentile_ms(latencies, 0.50),
            p99_ms: percentile_ms(latencies, 0.99),
            max_ms: percentile_ms(latencies, 1.0),
            connections_closed_by_responder: self.tally.closed,
            responder_cpu_cores: self.responder_cpu_cores,
            responses_per_responder_cpu_second: (self.responder_cpu_cores > 0.0)
                .then(|| latencies.len() as f64 / (self.responder_cpu_cores * seconds as f64)),
            generator_cpu_cores: self.generator_cpu_cores,
            other_cpu_cores: self.other_cpu_cores,
        }
    }
}

/// Runs `concurrency` loops that POST the target's requests round-robin: a warm-up, then
/// `duration` in which every request sent is counted (its answer may come after the end).
async fn measure(
    http: &reqwest::Client,
    target: &Target,
    probes: &Arc<Vec<Probe>>,
    concurrency: usize,
    duration: Duration,
    clock_ticks: f64,
) -> anyhow::Result<Window> {
    let start = Instant::now() + WARMUP;
    let deadline = start + duration;
    let next = Arc::new(AtomicUsize::new(0));
    let url: Arc<str> = Arc::from(target.url.as_str());
    let (nonce, responder) = (target.nonce, target.responder);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, url, probes, next) = (http.clone(), url.clone(), probes.clone(), next.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let sent = Instant::now();
                if sent >= deadline || probes.is_empty() {
                    return tally;
                }
                let Some(probe) = probes.get(next.fetch_add(1, Ordering::Relaxed) % probes.len()) else {
                    return tally;
                };
                let body = if nonce {
                    &probe.nonce_request
                } else {
                    &probe.cached_request
                };
                let outcome = exchange(&http, &url, body.clone(), probe).await;
                if sent < start {
                    continue;
                }
                match outcome {
                    Ok((latency, closed)) => {
                        tally.latencies.push(micros(latency));
                        tally.closed += usize::from(closed);
                    }
                    Err(error) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(error);
                    }
                }
            }
        });
    }
    tokio::time::sleep_until(start.into()).await;
    let responder_before = responder_cpu_seconds(responder, clock_ticks)?;
    let generator_before = process_cpu_seconds_self(clock_ticks)?;
    let machine_before = machine_busy_seconds(clock_ticks)?;
    tokio::time::sleep_until(deadline.into()).await;
    let responder_after = responder_cpu_seconds(responder, clock_ticks)?;
    let generator_after = process_cpu_seconds_self(clock_ticks)?;
    let machine_after = machine_busy_seconds(clock_ticks)?;
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let part = joined.context("a load task failed")?;
        tally.latencies.extend(part.latencies);
        tally.errors += part.errors;
        tally.closed += part.closed;
        if tally.first_error.is_none() {
            tally.first_error = part.first_error;
        }
    }
    let seconds = duration.as_secs_f64();
    let responder_cpu_cores = (responder_after - responder_before) / seconds;
    let generator_cpu_cores = (generator_after - generator_before) / seconds;
    let machine_cores = (machine_after - machine_before) / seconds;
    Ok(Window {
        tally,
        responder_cpu_cores,
        generator_cpu_cores,
        other_cpu_cores: (machine_cores - responder_cpu_cores - generator_cpu_cores).max(0.0),
    })
}

/// The busy time of every CPU of the machine (the first `/proc/stat` line: user, nice, system,
/// irq, softirq and steal; not idle or iowait), in seconds.
fn machine_busy_seconds(clock_ticks: f64) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = text
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().context("/proc/stat: a cpu field is not a number"))
        .collect::<anyhow::Result<_>>()?;
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| ticks.get(i)).sum();
    Ok(busy as f64 / clock_ticks)
}

/// One measured POST: the latency to the last byte and whether the responder closes the
/// connection after it, or why it failed (not 200, or not the expected OCSP answer).
async fn exchange(http: &reqwest::Client, url: &str, body: Vec<u8>, probe: &Probe) -> Result<(Duration, bool), String> {
    let sent = Instant::now();
    let answer = post(http, url, body).await?;
    let latency = sent.elapsed();
    if answer.status != StatusCode::OK {
        return Err(format!("HTTP {}", answer.status));
    }
    check_body(&answer.body, probe)?;
    Ok((latency, answer.closed))
}

/// Whether the server ends the connection after this response (HTTP/1.0 without keep-alive, as
/// `openssl ocsp` answers, or `Connection: close`).
fn closes_connection(response: &reqwest::Response) -> bool {
    let connection = response
        .headers()
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    match connection.as_deref() {
        Some(value) if value.contains("close") => true,
        Some(value) if value.contains("keep-alive") => false,
        _ => response.version() <= reqwest::Version::HTTP_10,
    }
}

/// An error and its sources on one line (reqwest's own message leaves the cause out).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A DER TLV's tag, header length and content length, from its first bytes.
fn tlv_header(der: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, usize::from(first)));
    }
    let octets = usize::from(first & 0x7f);
    if octets == 0 || octets > 4 {
        return None;
    }
    let length = der
        .get(2..2 + octets)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((tag, 2 + octets, length))
}

/// Whether `body` is exactly one DER OCSPResponse with status `successful` and responseBytes.
fn is_successful_ocsp(body: &[u8]) -> bool {
    match tlv_header(body) {
        Some((0x30, header, length)) if header.checked_add(length) == Some(body.len()) => {
            matches!(body.get(header..header + 4), Some([0x0a, 0x01, 0x00, 0xa0]))
        }
        _ => false,
    }
}

/// What the one SingleResponse of an OCSP answer says.
#[derive(Debug, PartialEq, Eq)]
struct SingleAnswer {
    /// The CertID's serial: the INTEGER's content octets.
    serial: Vec<u8>,
    /// The CertStatus choice: 0 good, 1 revoked, 2 unknown.
    status: u8,
    /// The CRLReason of a revoked status, when given.
    reason: Option<u8>,
}

/// Reads the serial and status of the one SingleResponse of a successful BasicOCSPResponse
/// (RFC 6960 4.2.1) without checking the signature; `None` for anything else.
fn single_answer(body: &[u8]) -> Option<SingleAnswer> {
    use der::Decode;
    use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};
    let response = OcspResponse::from_der(body).ok()?;
    if response.response_status != OcspResponseStatus::Successful {
        return None;
    }
    let basic = BasicOcspResponse::from_der(response.response_bytes?.response.as_bytes()).ok()?;
    let [single] = basic.tbs_response_data.responses.as_slice() else {
        return None;
    };
    let (status, reason) = match &single.cert_status {
        CertStatus::Good(_) => (0, None),
        CertStatus::Revoked(info) => (1, info.revocation_reason.map(|r| r as u8)),
        CertStatus::Unknown(_) => (2, None),
    };
    Some(SingleAnswer {
        serial: single.cert_id.serial_number.as_bytes().to_vec(),
        status,
        reason,
    })
}

/// Checks an answer against what the probe expects: one answer, for its serial, good, or
/// revoked with keyCompromise.
fn check_body(body: &[u8], probe: &Probe) -> Result<(), String> {
    let Some(answer) = single_answer(body) else {
        return Err(format!(
            "not a successful OCSP response with one answer ({} bytes)",
            body.len()
        ));
    };
    let serial = answer.serial.strip_prefix(&[0u8]).unwrap_or(&answer.serial);
    if serial != probe.serial_der.as_slice() {
        return Err(format!("the answer for serial {} names another serial", probe.serial));
    }
    let expected = if probe.revoked { (1, Some(1)) } else { (0, None) };
    if (answer.status, answer.reason) != expected {
        return Err(format!(
            "serial {}: status {} reason {:?}, expected {} (0 good, 1 revoked with reason 1, keyCompromise)",
            probe.serial, answer.status, answer.reason, expected.0
        ));
    }
    Ok(())
}

/// The octets of a hex serial in OpenSSL's form (whole octets).
fn serial_octets(hex: &str) -> anyhow::Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .with_context(|| format!("serial '{hex}' is not whole hex octets"))
        })
        .collect()
}

/// The nonce extension's OID and value (the bytes a responder echoes), if `der` has one.
fn nonce_extension(der: &[u8]) -> Option<&[u8]> {
    let at = der.windows(NONCE_OID_DER.len()).position(|w| w == NONCE_OID_DER)?;
    let value_at = at + NONCE_OID_DER.len();
    let (tag, header, length) = tlv_header(der.get(value_at..)?)?;
    if tag != 0x04 {
        return None;
    }
    der.get(at..value_at + header + length)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn responder_cpu_seconds(responder: Responder, clock_ticks: f64) -> anyhow::Result<f64> {
    match responder {
        Responder::Process(pid) => process_cpu_seconds(pid, clock_ticks),
        Responder::Group(pgid) => Ok(group_members(pgid)
            .iter()
            .filter_map(|(pid, _)| {
                cpu_seconds_of(&Path::new("/proc").join(pid.to_string()).join("stat"), clock_ticks).ok()
            })
            .sum()),
    }
}

/// The processes of a process group, with their state letter (`Z` for a zombie).
fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgid = pgid.to_string();
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields = stat_fields(&text)?;
            // Index 0 is field 3 (state), index 2 field 5 (process group).
            if fields.get(2) != Some(&pgid.as_str()) {
                return None;
            }
            Some((pid, fields.first()?.chars().next()?))
        })
        .collect()
}

/// `openssl ocsp` as a responder on `-port`, in its own process group; stopped on drop.
struct OpensslResponder {
    child: Child,
    pgid: u32,
    args: Vec<String>,
    log: PathBuf,
}

impl OpensslResponder {
    fn start(work: &Path, port: u16, workers: Option<u32>) -> anyhow::Result<Self> {
        let mut args: Vec<String> = [
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            "int.pem",
            "-rkey",
            "int.key",
            "-CA",
            "int.pem",
            "-nmin",
            "60",
            "-ignore_err",
            "-port",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(port.to_string());
        if let Some(workers) = workers {
            args.extend(["-multi".to_owned(), workers.to_string()]);
        }
        let log = work.join("openssl-ocsp.log");
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new("openssl")
            .current_dir(work)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("cannot share the openssl log file")?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("cannot start openssl ocsp as a responder")?;
        let pgid = child.id();
        Ok(Self { child, pgid, args, log })
    }

    fn command_line(&self) -> String {
        format!("openssl {}", self.args.join(" "))
    }

    /// Waits until it answers `request` with a successful OCSP response.
    async fn wait_ready(&mut self, http: &reqwest::Client, url: &str, request: &[u8]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let last = match post(http, url, request.to_vec()).await {
                Ok(answer) if answer.status == StatusCode::OK && is_successful_ocsp(&answer.body) => return Ok(()),
                Ok(answer) => format!("HTTP {}, {} bytes", answer.status, answer.body.len()),
                Err(error) => error,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("openssl ocsp exited ({status}): {}", self.log_tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "openssl ocsp did not answer at {url} within {} s (last: {last}): {}",
                    READY_WAIT.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join(" | ");
        if tail.is_empty() {
            "(no output)".to_owned()
        } else {
            tail
        }
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.pgid)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for OpensslResponder {
    fn drop(&mut self) {
        // The leader is reaped last, so the group id cannot be reused while it is signalled.
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && group_members(self.pgid).iter().any(|(_, state)| *state != 'Z') {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl_version() -> anyhow::Result<String> {
    let output = Command::new("openssl")
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .context(
            "openssl is not installed (it is the reference responder and makes the requests): apt-get install openssl",
        )?;
    if !output.status.success() {
        bail!("`openssl version` failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether `openssl ocsp` has `-multi` (OpenSSL 3.0 and later).
fn openssl_supports_multi() -> bool {
    Command::new("openssl")
        .args(["ocsp", "-help"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stderr).contains("-multi")
                || String::from_utf8_lossy(&out.stdout).contains("-multi")
        })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The network interfaces besides `lo` in this process's namespace, if any (a fresh namespace
/// has none). `/proc/self/net` follows the namespace; `/sys/class/net` would need a remount.
fn other_network_interfaces() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/net/dev").ok()?;
    let names: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| *name != "lo")
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_take_openssls_form() {
        assert_eq!(openssl_serial("40ab").unwrap(), "40AB");
        assert_eq!(openssl_serial("0abc").unwrap(), "0ABC");
        assert_eq!(openssl_serial("abc").unwrap(), "0ABC");
        assert_eq!(openssl_serial("00ff").unwrap(), "FF");
        assert_eq!(openssl_serial("0").unwrap(), "00");
        assert!(openssl_serial("").is_err());
        assert!(openssl_serial("4g").is_err());
    }

    #[test]
    fn index_lines_are_tab_separated_with_revocations() {
        let at = time::macros::datetime!(2026-03-04 05:06:07 UTC);
        let mut cert = Issued {
            common_name: "a.test".to_owned(),
            serial: "40AB".to_owned(),
            not_after: at,
            revoked_at: None,
        };
        assert_eq!(
            index_line(&cert).unwrap(),
            "V\t260304050607Z\t\t40AB\tunknown\t/CN=a.test\n"
        );
        cert.revoked_at = Some(time::macros::datetime!(2026-01-02 03:04:05 +01:00));
        assert_eq!(
            index_line(&cert).unwrap(),
            "R\t260304050607Z\t260102020405Z,keyCompromise\t40AB\tunknown\t/CN=a.test\n"
        );
    }

    #[test]
    fn ocsp_responses_are_recognised_by_their_first_octets() {
        // OCSPResponse { successful, [0] { ... } } with a long-form length.
        let mut body = vec![0x30, 0x81, 0x85, 0x0a, 0x01, 0x00, 0xa0, 0x80];
        body.resize(3 + 0x85, 0);
        assert!(is_successful_ocsp(&body));
        body.push(0);
        assert!(!is_successful_ocsp(&body), "trailing data");
        assert!(!is_successful_ocsp(&[0x30, 0x03, 0x0a, 0x01, 0x01]), "malformedRequest");
        assert!(!is_successful_ocsp(b"<html>"));
        assert!(!is_successful_ocsp(&[]));
    }

    /// A DER TLV with a definite length.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        match len {
            0..0x80 => out.push(len as u8),
            0x80..0x100 => out.extend([0x81, len as u8]),
            _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn answers_signed_by_the_local_ca_are_read_back() {
        let now = OffsetDateTime::now_utc();
        let material = ck_pki::CaMaterial::create(&ck_pki::CaConfig::default(), now).unwrap();
        let signer = ck_pki::LocalCa::load(&material)
            .unwrap()
            .ocsp_signer(now, time::Duration::days(1))
            .unwrap();
        // OCSPRequest { TBSRequest { requestList { Request { CertID (SHA-1) } } } }.
        let sha1 = der(
            0x30,
            &[der(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), der(0x05, &[])].concat(),
        );
        let serial = [0x40, 0xab, 0xcd];
        let cert_id = der(
            0x30,
            &[sha1, der(0x04, &[1; 20]), der(0x04, &[2; 20]), der(0x02, &serial)].concat(),
        );
        let request = der(0x30, &der(0x30, &der(0x30, &der(0x30, &cert_id))));
        let query = signer.parse_request(&request).unwrap();
        let revoked = ck_pki::OcspStatus::Revoked {
            at: now,
            reason: ck_domain::RevocationReason::KeyCompromise,
        };
        let mut probe = Probe {
            serial: "40ABCD".to_owned(),
            serial_der: serial_octets("40ABCD").unwrap(),
            revoked: false,
            cached_request: request.clone(),
            nonce_request: request.clone(),
        };
        for (status, expected) in [
            (ck_pki::OcspStatus::Good, (0, None)),
            (revoked, (1, Some(1))),
            (ck_pki::OcspStatus::Unknown, (2, None)),
        ] {
            let body = signer
                .respond(&query.certs, &[status], None, now, now + time::Duration::hours(1))
                .unwrap();
            assert!(is_successful_ocsp(&body));
            let answer = single_answer(&body).unwrap();
            assert_eq!(
                (answer.serial.as_slice(), answer.status, answer.reason),
                (&serial[..], expected.0, expected.1)
            );
            probe.revoked = expected.0 == 1;
            assert_eq!(check_body(&body, &probe).is_ok(), expected.0 != 2, "{expected:?}");
        }
        let good = signer
            .respond(&query.certs, &[ck_pki::OcspStatus::Good], None, now, now)
            .unwrap();
        probe.revoked = true;
        assert!(check_body(&good, &probe).unwrap_err().contains("expected 1"));
        probe.revoked = false;
        probe.serial_der = vec![0x40, 0xab];
        assert!(check_body(&good, &probe).unwrap_err().contains("another serial"));
        assert!(
            single_answer(&[0x30, 0x03, 0x0a, 0x01, 0x01]).is_none(),
            "malformedRequest"
        );
        assert!(single_answer(&good[..good.len() - 1]).is_none(), "truncated");
    }

    #[test]
    fn nonces_are_found_with_their_value() {
        let mut der = vec![0x30, 0x20, 0xa2, 0x10];
        der.extend_from_slice(&NONCE_OID_DER);
        der.extend_from_slice(&[0x04, 0x04, 0x04, 0x02, 0xaa, 0xbb, 0x99]);
        let nonce = nonce_extension(&der).unwrap();
        assert_eq!(nonce.len(), NONCE_OID_DER.len() + 6);
        assert!(contains(&der, nonce));
        assert!(nonce_extension(&der[..der.len() - 3]).is_none(), "truncated value");
        assert!(nonce_extension(&[0x30, 0x00]).is_none());
    }
}
