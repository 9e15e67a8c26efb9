//! `certkeeper bench agents`: one control plane under a simulated agent fleet.
//!
//! The server runs as a child process (`certkeeper serve` on 127.0.0.1 with a temporary data
//! directory), so its CPU time in `/proc/<pid>/stat` is its own. The setup registers the agents,
//! binds one certificate to each, sends each certificate's CSR the way an agent does, and waits
//! until every certificate is issued: the fleet is then in its steady state, where an agent only
//! heartbeats and polls for work. The measured phase runs that schedule: every agent heartbeats
//! and then polls once per 30 s period, the agents spread evenly over the period.
//!
//! This is a benchmark: it reports what it saw and asserts nothing about timings.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ck_api_types::{AgentCsr, AgentWork, CreateCertificate, Heartbeat};
use ck_client::{CertificateQuery, Client};
use ck_domain::{KeyType, SubjectAltName};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::cli::BenchAgentsArgs;

/// How often an agent heartbeats and polls (the server's `AGENT_POLL_INTERVAL`).
const PERIOD: Duration = Duration::from_secs(30);
/// The schedule's resolution: due agents are launched on each tick.
const TICK: Duration = Duration::from_millis(10);
/// Agent cycles (heartbeat then poll) in flight at most; a due cycle beyond it is skipped.
const MAX_IN_FLIGHT: usize = 512;
/// A cycle launched this much after its due time counts as late.
const LATE_AFTER: Duration = Duration::from_millis(100);
/// Setup requests in flight at once.
const SETUP_CONCURRENCY: usize = 32;
/// How long the setup waits for every certificate to be issued.
const ISSUE_WAIT: Duration = Duration::from_secs(300);
/// Progress lines on stderr, at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

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

pub(crate) async fn run(args: BenchAgentsArgs) -> anyhow::Result<()> {
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
    let mut server = ServerProcess::start(data_dir.path(), database_flag.as_deref())?;
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
    let csrs = tokio::task::spawn_blocking(move || generate_csrs(n));

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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
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

/// A P-256 key and CSR for each agent's certificate (blocking: call off the async threads).
fn generate_csrs(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let names = vec![SubjectAltName::parse(&common_name(i))?];
            Ok(ck_pki::ServerKey::generate(KeyType::EcdsaP256, &names)?.csr_pem)
        })
        .collect()
}

/// Runs `task(i)` for every i in 0..n with `SETUP_CONCURRENCY` in flight, with a progress line
/// every few seconds; stops at the first error.
pub(crate) async fn bounded<T, F, Fut>(label: &str, n: usize, task: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let task = Arc::new(task);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY.min(n) {
        let (task, next, done, failed) = (task.clone(), next.clone(), done.clone(), failed.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failed.load(Ordering::Relaxed) {
                    return Ok::<_, anyhow::Error>(results);
                }
                match task(i).await {
                    Ok(value) => results.push((i, value)),
                    Err(error) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let progress = tokio::spawn({
        let (done, label) = (done.clone(), label.to_owned());
        async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let count = done.load(Ordering::Relaxed);
                let rate = count as f64 / started.elapsed().as_secs_f64();
                eprintln!("  {label}: {count}/{n} ({rate:.0}/s)");
            }
        }
    });
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(results)) => {
                for (i, value) in results {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(value);
                    }
                }
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(panic) => {
                first_error.get_or_insert(anyhow::anyhow!("a setup task failed: {panic}"));
            }
        }
    }
    progress.abort();
    if let Some(error) = first_error {
        return Err(error.context(format!("setup step '{label}' failed")));
    }
    eprintln!("  {label}: {n}/{n} in {:.1} s", started.elapsed().as_secs_f64());
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.with_context(|| format!("setup step '{label}' lost item {i}")))
        .collect()
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

pub(crate) fn micros(latency: Duration) -> u32 {
    u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)
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

pub(crate) fn percentile_ms(sorted_micros: &[u32], p: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_micros.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted_micros.len() - 1);
    sorted_micros.get(idx).map_or(0.0, |&us| f64::from(us) / 1000.0)
}

/// The server under test: a `certkeeper serve` child process, stopped on drop (SIGTERM, then
/// SIGKILL after 10 s).
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) pid: u32,
}

impl ServerProcess {
    pub(crate) fn start(data_dir: &Path, database: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(data_dir, database, &[])
    }

    /// Like [`ServerProcess::start`], with more `serve` flags.
    pub(crate) fn start_with(data_dir: &Path, database: Option<&str>, extra: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // The setup registers thousands of agents with the one admin token.
            .args(["--token-rate-limit", "0"]);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        command.args(extra);
        // Only the flags above configure it, whatever this shell exports.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CERTKEEPER_") {
                command.env_remove(name);
            }
        }
        let child = command
            .env("CERTKEEPER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the server (certkeeper serve)")?;
        let pid = child.id();
        Ok(Self { child, pid })
    }

    /// Waits (60 s at most) for `<data-dir>/server.url`, then for `/health`; returns the URL and
    /// the admin token.
    pub(crate) async fn wait_ready(&mut self, data_dir: &Path) -> anyhow::Result<(String, String)> {
        let url_file: PathBuf = data_dir.join("server.url");
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&url_file) {
                let url = text.trim().to_owned();
                if !url.is_empty() {
                    break url;
                }
            }
            if Instant::now() >= deadline {
                bail!("the server did not write {} within 60 s", url_file.display());
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let token = std::fs::read_to_string(data_dir.join("admin.token")).context("cannot read the admin token")?;
        let token = token.trim().to_owned();
        let admin = Client::new(&url, &token)?;
        while !admin.healthy().await {
            if Instant::now() >= deadline {
                bail!("the server at {url} did not answer /health within 60 s");
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((url, token))
    }

    /// SIGKILL, and the exit collected.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the server exited during start-up ({status}; its log is above)"),
            Err(error) => bail!("cannot check on the server process: {error}"),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, normally 100).
pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The fields of a `/proc/<pid>/stat` line after the command name: index 0 is field 3 (state).
pub(crate) fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// utime + stime of every thread of a process, in seconds.
pub(crate) fn cpu_seconds_of(stat_path: &Path, clock_ticks: f64) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat_path).with_context(|| format!("cannot read {}", stat_path.display()))?;
    let fields = stat_fields(&text).with_context(|| format!("{} has no ')'", stat_path.display()))?;
    // Fields 14 (utime) and 15 (stime), counted from 1, are indexes 11 and 12 here.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .with_context(|| format!("{} has no CPU time in field {}", stat_path.display(), i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / clock_ticks)
}

pub(crate) fn process_cpu_seconds(pid: u32, clock_ticks: f64) -> anyhow::Result<f64> {
    cpu_seconds_of(&Path::new("/proc").join(pid.to_string()).join("stat"), clock_ticks)
}

pub(crate) fn process_cpu_seconds_self(clock_ticks: f64) -> anyhow::Result<f64> {
    cpu_seconds_of(Path::new("/proc/self/stat"), clock_ticks)
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
