//! `certkeeper-bench agents`: one control plane under a simulated agent fleet.
//!
//! The server runs as a child process (`certkeeper serve`, as `certkeeper-bench serve`, on
//! 127.0.0.1 with a temporary data directory), so its CPU time in `/proc/<pid>/stat` is its own. The setup registers the agents,
//! binds one certificate to each, sends each certificate's CSR the way an agent does, and waits
//! until every certificate is issued: the fleet is then in its steady state, where an agent only
//! heartbeats and polls for work. The measured phase runs that schedule: every agent heartbeats
//! and then polls once per 30 s period, the agents spread evenly over the period.
//!
//! This is a benchmark: it reports what it saw and asserts nothing about timings.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ck_api_types::{AgentCsr, AgentWork, CreateCertificate, Heartbeat};
use ck_client::{CertificateQuery, Client};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::figures::{
    Output, clock_ticks_per_second, micros, percentile_ms, plain_table, process_cpu_seconds, process_cpu_seconds_self,
};
use crate::load::{PROGRESS_EVERY, bounded, make_csrs};
use crate::server::ServerProcess;

/// `certkeeper-bench agents`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentsArgs {
    /// Simulated agents (1 to 50000), each with one certificate bound to it.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) agents: usize,
    /// Seconds of measured steady state (10 to 600), after the setup.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration: u64,
    /// Database of the server: sqlite (a temp file) or a postgres:// URL (an empty database).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    #[command(flatten)]
    pub(crate) output: Output,
}

/// How often an agent heartbeats and polls (the server's `AGENT_POLL_INTERVAL`).
const PERIOD: Duration = Duration::from_secs(30);
/// The schedule's resolution: due agents are launched on each tick.
const TICK: Duration = Duration::from_millis(10);
/// Agent cycles (heartbeat then poll) in flight at most; a due cycle beyond it is skipped.
const MAX_IN_FLIGHT: usize = 512;
/// A cycle launched this much after its due time counts as late.
const LATE_AFTER: Duration = Duration::from_millis(100);
/// How long the setup waits for every certificate to be issued.
const ISSUE_WAIT: Duration = Duration::from_secs(300);

const GOAL_CORES: f64 = 1.0;
const GOAL_POLL_P99_MS: f64 = 20.0;

#[derive(Debug, Serialize)]
struct Report {
    database: String,
    agents: usize,
    poll_period_seconds: u64,
    duration_seconds: u64,
    measured_seconds: f64,
    machine_cores: usize,
    setup: SetupReport,
    poll_requests: usize,
    heartbeat_requests: usize,
    poll_errors: usize,
    heartbeat_errors: usize,
    first_error: Option<String>,
    skipped_cycles: u64,
    late_cycles: u64,
    max_launch_lag_ms: f64,
    max_cycles_in_flight: usize,
    requests_per_second: f64,
    server_cpu_cores: f64,
    generator_cpu_cores: f64,
    poll_p50_ms: f64,
    poll_p90_ms: f64,
    poll_p99_ms: f64,
    poll_max_ms: f64,
    heartbeat_p50_ms: f64,
    heartbeat_p99_ms: f64,
    heartbeat_max_ms: f64,
    server_vm_hwm_mb: f64,
    goal: String,
    goal_met: bool,
}

#[derive(Debug, Serialize)]
struct SetupReport {
    register_agents_seconds: f64,
    create_certificates_seconds: f64,
    submit_csrs_seconds: f64,
    wait_issued_seconds: f64,
    server_cpu_seconds: f64,
}

pub(crate) async fn run(args: AgentsArgs) -> anyhow::Result<()> {
    if !(1..=50_000).contains(&args.agents) || !(10..=600).contains(&args.duration) {
        bail!("--agents must be 1..=50000 and --duration 10..=600 (seconds)");
    }
    let clock_ticks = clock_ticks_per_second();
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let (database_flag, backend) = match args.database.as_str() {
        "sqlite" => (None, "sqlite".to_owned()),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            (Some(url.to_owned()), "postgres".to_owned())
        }
        other => bail!("--database must be sqlite or a postgres:// URL, not '{other}'"),
    };
    // Declared after the data directory, so it is dropped (and the server stopped) first.
    let mut server = ServerProcess::start(data_dir.path(), database_flag.as_deref(), &[])?;
    let (base_url, admin_token) = server.wait_ready(data_dir.path()).await?;
    let admin = Client::new(&base_url, &admin_token)?;
    let server_cpu_at_start = process_cpu_seconds(server.pid, clock_ticks)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let api = Arc::new(AgentApi {
        http,
        base_url: base_url.clone(),
    });

    // Setup. Agent names carry a run id, so a reused PostgreSQL database does not conflict.
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_id = run_id.get(..8).unwrap_or("bench").to_owned();
    let n = args.agents;
    eprintln!(
        "setting up {n} agents on {backend} (server pid {}, {base_url})…",
        server.pid
    );
    let csrs = tokio::task::spawn_blocking(move || make_csrs(n, common_name));

    let started = Instant::now();
    let agents = bounded("registering agents", n, {
        let admin = admin.clone();
        let run_id = run_id.clone();
        move |i| {
            let admin = admin.clone();
            let name = format!("bench-{run_id}-agent-{i}");
            async move {
                let created = admin
                    .create_agent(&name, Some("deploy"))
                    .await
                    .with_context(|| format!("cannot register agent {name}"))?;
                let auth = HeaderValue::from_str(&format!("Bearer {}", created.token))
                    .context("the agent token is not a valid header value")?;
                Ok(SimAgent {
                    id: created.agent.id,
                    auth,
                })
            }
        }
    })
    .await?;
    let register_seconds = started.elapsed().as_secs_f64();
    let agents = Arc::new(agents);

    let started = Instant::now();
    let certificate_ids = bounded("creating certificates", n, {
        let (admin, agents) = (admin.clone(), agents.clone());
        move |i| {
            let (admin, agents) = (admin.clone(), agents.clone());
            async move {
                let agent = agents.get(i).context("agent index out of range")?;
                let request = CreateCertificate {
                    common_name: Some(common_name(i)),
                    agent: Some(agent.id.clone()),
                    ..CreateCertificate::default()
                };
                let created = admin
                    .create_certificate(&request, None)
                    .await
                    .with_context(|| format!("cannot create the certificate of agent {i}"))?;
                Ok(created.certificate.id)
            }
        }
    })
    .await?;
    let certificates_seconds = started.elapsed().as_secs_f64();

    let csrs = Arc::new(csrs.await.context("the CSR generator panicked")??);
    let certificate_ids = Arc::new(certificate_ids);
    let started = Instant::now();
    bounded("sending CSRs", n, {
        let (api, agents, csrs, ids) = (api.clone(), agents.clone(), csrs.clone(), certificate_ids.clone());
        move |i| {
            let (api, agents, csrs, ids) = (api.clone(), agents.clone(), csrs.clone(), ids.clone());
            async move {
                let (Some(agent), Some(csr), Some(id)) = (agents.get(i), csrs.get(i), ids.get(i)) else {
                    bail!("agent index {i} out of range");
                };
                api.submit_csr(agent, id, csr).await
            }
        }
    })
    .await?;
    let csr_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    wait_all_issued(&admin, n).await?;
    let wait_seconds = started.elapsed().as_secs_f64();
    drop(csrs);

    // Measured phase.
    let server_cpu_before = process_cpu_seconds(server.pid, clock_ticks)?;
    let setup = SetupReport {
        register_agents_seconds: register_seconds,
        create_certificates_seconds: certificates_seconds,
        submit_csrs_seconds: csr_seconds,
        wait_issued_seconds: wait_seconds,
        server_cpu_seconds: server_cpu_before - server_cpu_at_start,
    };
    eprintln!(
        "setup done: register {register_seconds:.1} s, certificates {certificates_seconds:.1} s, CSRs {csr_seconds:.1} s, \
         issued after {wait_seconds:.1} s more; measuring {} s of steady state (each agent heartbeats and polls every {} s)…",
        args.duration,
        PERIOD.as_secs()
    );
    let generator_cpu_before = process_cpu_seconds_self(clock_ticks)?;
    let window_start = Instant::now();
    let measured = measure(&api, &agents, Duration::from_secs(args.duration)).await;
    let measured_seconds = window_start.elapsed().as_secs_f64();
    let server_cpu_after = process_cpu_seconds(server.pid, clock_ticks)?;
    let generator_cpu_after = process_cpu_seconds_self(clock_ticks)?;
    let vm_hwm_kb = vm_hwm_kb(server.pid)?;
    drop(server);

    let mut stats = measured.stats;
    stats.poll.sort_unstable();
    stats.heartbeat.sort_unstable();
    let server_cpu_cores = (server_cpu_after - server_cpu_before) / measured_seconds;
    let poll_p99_ms = percentile_ms(&stats.poll, 0.99);
    let goal_met = server_cpu_cores < GOAL_CORES && poll_p99_ms < GOAL_POLL_P99_MS && !stats.poll.is_empty();
    let report = Report {
        database: backend,
        agents: n,
        poll_period_seconds: PERIOD.as_secs(),
        duration_seconds: args.duration,
        measured_seconds,
        machine_cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
        setup,
        poll_requests: stats.poll.len() + stats.poll_errors,
        heartbeat_requests: stats.heartbeat.len() + stats.heartbeat_errors,
        poll_errors: stats.poll_errors,
        heartbeat_errors: stats.heartbeat_errors,
        first_error: stats.first_error,
        skipped_cycles: measured.skipped,
        late_cycles: measured.late,
        max_launch_lag_ms: measured.max_lag.as_secs_f64() * 1000.0,
        max_cycles_in_flight: measured.max_in_flight,
        requests_per_second: (stats.poll.len() + stats.poll_errors + stats.heartbeat.len() + stats.heartbeat_errors)
            as f64
            / measured_seconds,
        server_cpu_cores,
        generator_cpu_cores: (generator_cpu_after - generator_cpu_before) / measured_seconds,
        poll_p50_ms: percentile_ms(&stats.poll, 0.50),
        poll_p90_ms: percentile_ms(&stats.poll, 0.90),
        poll_p99_ms,
        poll_max_ms: percentile_ms(&stats.poll, 1.0),
        heartbeat_p50_ms: percentile_ms(&stats.heartbeat, 0.50),
        heartbeat_p99_ms: percentile_ms(&stats.heartbeat, 0.99),
        heartbeat_max_ms: percentile_ms(&stats.heartbeat, 1.0),
        server_vm_hwm_mb: vm_hwm_kb as f64 / 1024.0,
        goal: format!("server < {GOAL_CORES} core and poll p99 < {GOAL_POLL_P99_MS} ms"),
        goal_met,
    };
    args.output.print(&report, print_table)
}

fn print_table(r: &Report) {
    let mut table = plain_table();
    let rows: Vec<(&str, String)> = vec![
        ("database", r.database.clone()),
        (
            "agents",
            format!("{} (heartbeat + poll every {} s each)", r.agents, r.poll_period_seconds),
        ),
        (
            "duration",
            format!("{} s asked, {:.1} s measured", r.duration_seconds, r.measured_seconds),
        ),
        (
            "setup",
            format!(
                "register {:.1} s, certificates {:.1} s, CSRs {:.1} s, wait issued {:.1} s; server CPU {:.1} s",
                r.setup.register_agents_seconds,
                r.setup.create_certificates_seconds,
                r.setup.submit_csrs_seconds,
                r.setup.wait_issued_seconds,
                r.setup.server_cpu_seconds
            ),
        ),
        (
            "requests",
            format!(
                "{} poll, {} heartbeat ({:.0}/s)",
                r.poll_requests, r.heartbeat_requests, r.requests_per_second
            ),
        ),
        (
            "errors",
            format!(
                "{} poll, {} heartbeat{}",
                r.poll_errors,
                r.heartbeat_errors,
                r.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ),
        ),
        (
            "generator",
            format!(
                "{} cycles skipped (>{MAX_IN_FLIGHT} in flight), {} late (>{} ms), max lag {:.1} ms, max {} in flight",
                r.skipped_cycles,
                r.late_cycles,
                LATE_AFTER.as_millis(),
                r.max_launch_lag_ms,
                r.max_cycles_in_flight
            ),
        ),
        (
            "server CPU",
            format!("{:.3} cores (avg over the window)", r.server_cpu_cores),
        ),
        (
            "generator CPU",
            format!(
                "{:.3} cores (same machine, {} cores in all)",
                r.generator_cpu_cores, r.machine_cores
            ),
        ),
        (
            "poll latency",
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.poll_p50_ms, r.poll_p90_ms, r.poll_p99_ms, r.poll_max_ms
            ),
        ),
        (
            "heartbeat latency",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.heartbeat_p50_ms, r.heartbeat_p99_ms, r.heartbeat_max_ms
            ),
        ),
        ("server VmHWM", format!("{:.1} MB", r.server_vm_hwm_mb)),
    ];
    for (name, value) in rows {
        table.add_row(vec![name.to_owned(), value]);
    }
    println!("{table}");
    println!("goal: {} → {}", r.goal, if r.goal_met { "met" } else { "not met" });
    if r.poll_errors + r.heartbeat_errors > 0 || r.skipped_cycles > 0 {
        println!("note: errors or skipped cycles: the latencies above leave those requests out");
    }
}

/// A simulated agent: its id and its `Authorization` header.
struct SimAgent {
    id: String,
    auth: HeaderValue,
}

/// The agents' side of the API over one shared connection pool.
struct AgentApi {
    http: reqwest::Client,
    base_url: String,
}

impl AgentApi {
    /// Sends a CSR as the agent does; a job that a worker holds at that moment answers 409, so
    /// that is retried for a while.
    async fn submit_csr(&self, agent: &SimAgent, certificate_id: &str, csr: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/agent/certificates/{certificate_id}/csr", self.base_url);
        let body = serde_json::to_vec(&AgentCsr { csr: csr.to_owned() })?;
        for attempt in 0..50u32 {
            let response = self
                .http
                .post(&url)
                .header(AUTHORIZATION, agent.auth.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .context("cannot send a CSR")?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            if status != reqwest::StatusCode::CONFLICT || attempt == 49 {
                bail!("the CSR for certificate {certificate_id} was refused ({status}): {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the CSR for certificate {certificate_id} was refused 50 times (409)")
    }
}

fn common_name(i: usize) -> String {
    format!("agent-{i}.bench.internal")
}

/// Waits until no certificate is pending (bounded), and fails if one failed.
async fn wait_all_issued(admin: &Client, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + ISSUE_WAIT;
    let mut last_line = Instant::now();
    loop {
        let failed = admin
            .certificates(&CertificateQuery {
                status: Some("failed".to_owned()),
                limit: Some(1),
                ..CertificateQuery::default()
            })
            .await?;
        if let Some(cert) = failed.items.first() {
            bail!(
                "certificate {} ({}) failed during the setup: {}",
                cert.id,
                cert.name,
                cert.last_error.as_deref().unwrap_or("no error recorded")
            );
        }
        let pending = admin
            .certificates(&CertificateQuery {
                status: Some("pending".to_owned()),
                limit: Some(1),
                ..CertificateQuery::default()
            })
            .await?;
        if pending.items.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{n} certificates were not all issued after {} s (one still pending: {}); the server's job workers \
                 are too slow or stuck",
                ISSUE_WAIT.as_secs(),
                pending.items.first().map(|c| c.id.as_str()).unwrap_or("?")
            );
        }
        if last_line.elapsed() >= PROGRESS_EVERY {
            eprintln!("  waiting for the issuance of {n} certificates…");
            last_line = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the measured phase saw.
#[derive(Default)]
struct Stats {
    /// Latencies of successful requests, in microseconds.
    poll: Vec<u32>,
    heartbeat: Vec<u32>,
    poll_errors: usize,
    heartbeat_errors: usize,
    first_error: Option<String>,
}

impl Stats {
    fn record(&mut self, poll: bool, outcome: Result<Duration, String>) {
        match (outcome, poll) {
            (Ok(latency), true) => self.poll.push(micros(latency)),
            (Ok(latency), false) => self.heartbeat.push(micros(latency)),
            (Err(error), poll) => {
                if poll {
                    self.poll_errors += 1;
                } else {
                    self.heartbeat_errors += 1;
                }
                self.first_error.get_or_insert(error);
            }
        }
    }
}

struct Measured {
    stats: Stats,
    skipped: u64,
    late: u64,
    max_lag: Duration,
    max_in_flight: usize,
}

/// Runs the fleet's schedule for `duration`: the k-th cycle (agent k mod n, period k / n) is due
/// at `period·(k / n) + period·(k mod n) / n`. Returns once every launched cycle has finished.
async fn measure(api: &Arc<AgentApi>, agents: &Arc<Vec<SimAgent>>, duration: Duration) -> Measured {
    let n = agents.len();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let launched = Arc::new(AtomicU64::new(0));
    let heartbeat_url = format!("{}/api/v1/agent/heartbeat", api.base_url);
    let work_url = format!("{}/api/v1/agent/work", api.base_url);
    let (mut skipped, mut late, mut max_lag) = (0u64, 0u64, Duration::ZERO);
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut last_line = start;
    let mut k: u64 = 0;
    let n64 = n as u64;
    let due =
        |k: u64| PERIOD * u32::try_from(k / n64).unwrap_or(u32::MAX) + PERIOD.mul_f64((k % n64) as f64 / n as f64);
    loop {
        ticker.tick().await;
        let now = start.elapsed();
        if now >= duration {
            break;
        }
        while due(k) <= now {
            let lag = now.saturating_sub(due(k));
            max_lag = max_lag.max(lag);
            if lag > LATE_AFTER {
                late += 1;
            }
            let index = usize::try_from(k % n64).unwrap_or(0);
            k += 1;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let current = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            max_in_flight.fetch_max(current, Ordering::Relaxed);
            launched.fetch_add(1, Ordering::Relaxed);
            let (api, agents, stats, in_flight) = (api.clone(), agents.clone(), stats.clone(), in_flight.clone());
            let (heartbeat_url, work_url) = (heartbeat_url.clone(), work_url.clone());
            tasks.spawn(async move {
                if let Some(agent) = agents.get(index) {
                    let heartbeat = heartbeat_body(index);
                    let outcome = timed(
                        api.http
                            .post(heartbeat_url)
                            .header(AUTHORIZATION, agent.auth.clone())
                            .header(CONTENT_TYPE, "application/json")
                            .body(heartbeat),
                        false,
                    )
                    .await;
                    if let Ok(mut stats) = stats.lock() {
                        stats.record(false, outcome);
                    }
                    let outcome = timed(api.http.get(work_url).header(AUTHORIZATION, agent.auth.clone()), true).await;
                    if let Ok(mut stats) = stats.lock() {
                        stats.record(true, outcome);
                    }
                }
                in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        // Reap finished cycles so the set stays small.
        while tasks.try_join_next().is_some() {}
        if last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            eprintln!(
                "  {:.0} s: {} cycles launched, {} in flight, {} skipped",
                now.as_secs_f64(),
                launched.load(Ordering::Relaxed),
                in_flight.load(Ordering::Relaxed),
                skipped
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    let stats = match Arc::try_unwrap(stats) {
        Ok(mutex) => mutex.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(shared) => match shared.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        },
    };
    Measured {
        stats,
        skipped,
        late,
        max_lag,
        max_in_flight: max_in_flight.load(Ordering::Relaxed),
    }
}

fn heartbeat_body(index: usize) -> Vec<u8> {
    let heartbeat = Heartbeat {
        hostname: Some(format!("host-{index}.bench.internal")),
        os: Some(std::env::consts::OS.to_owned()),
        arch: Some(std::env::consts::ARCH.to_owned()),
        version: Some(format!("{}-bench", env!("CARGO_PKG_VERSION"))),
    };
    serde_json::to_vec(&heartbeat).unwrap_or_default()
}

/// Sends a request and reads the whole answer: the latency from just before the send to the
/// last byte, or why it failed. A poll's answer must also parse as the work list.
async fn timed(request: reqwest::RequestBuilder, poll: bool) -> Result<Duration, String> {
    let sent = Instant::now();
    let response = request.send().await.map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("read: {e}"))?;
    let latency = sent.elapsed();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    if poll {
        serde_json::from_slice::<AgentWork>(&body).map_err(|e| format!("the work list does not parse: {e}"))?;
    }
    Ok(latency)
}

/// The peak resident set size of a process (`VmHWM` in `/proc/<pid>/status`), in kB.
fn vm_hwm_kb(pid: u32) -> anyhow::Result<u64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .with_context(|| format!("{} has no VmHWM line", path.display()))
}
