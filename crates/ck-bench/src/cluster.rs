//! `certkeeper-bench cluster`: several `certkeeper serve` processes on one PostgreSQL.
//!
//! First, issuance throughput through the API with 1, 2, 3… nodes (local CA, CSRs made
//! beforehand, requests spread evenly over the nodes), each on a database of its own, with the
//! share of jobs each node's workers claimed. Then failover: three nodes, the leader killed
//! with SIGKILL, the time until another node reports itself leader, the killed node started
//! again, and so on: the distribution of those times. All processes share this machine's
//! cores, so more nodes add availability here, not throughput: the figures show what the
//! database-backed queue costs, not what more hosts would give.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ck_store::{Backend, DatabaseUrl};
use serde::Serialize;

use crate::figures::{Output, percentile_duration_ms, percentile_of};
use crate::load::{issue_all, prepare_csrs};
use crate::server::ServerProcess;

/// `certkeeper-bench cluster`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// A PostgreSQL URL whose user may create databases; each measurement gets a new one.
    #[arg(long)]
    pub(crate) database: String,
    /// Node counts to measure issuance with (each 1 to 5).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
    pub(crate) nodes: Vec<usize>,
    /// Certificates issued per node count (1 to 100000).
    #[arg(long, default_value_t = 3000)]
    pub(crate) count: usize,
    /// Requests in flight at once, spread over the nodes (1 to 1024).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Leader kills for the failover distribution, on three nodes (0 to 100; 0 skips it).
    #[arg(long, default_value_t = 20)]
    pub(crate) kills: usize,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Serialize)]
struct Throughput {
    nodes: usize,
    count: usize,
    seconds: f64,
    certificates_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Jobs claimed by each node's workers.
    claimed_per_node: Vec<u64>,
    ratio_to_one_node: f64,
}

#[derive(Debug, Serialize)]
struct Failover {
    kills: usize,
    min_s: f64,
    p50_s: f64,
    p90_s: f64,
    max_s: f64,
    mean_s: f64,
    all_s: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    throughput: Vec<Throughput>,
    failover: Option<Failover>,
}

/// One node: its process, data directory and URL.
struct Node {
    process: ServerProcess,
    data_dir: PathBuf,
    url: String,
}

struct Cluster {
    nodes: Vec<Node>,
    token: String,
    database: DatabaseUrl,
    kek: PathBuf,
}

impl Cluster {
    async fn start(dir: &Path, n: usize, database: DatabaseUrl) -> anyhow::Result<Self> {
        let kek = dir.join("cluster.kek");
        let mut cluster = Self {
            nodes: Vec::new(),
            token: String::new(),
            database,
            kek,
        };
        for i in 0..n {
            // The first node creates the KEK, the local CA and the admin token; the others wait.
            let node = cluster.start_node(&dir.join(format!("node{}", i + 1)), i).await?;
            if i == 0 {
                cluster.token = std::fs::read_to_string(node.data_dir.join("admin.token"))
                    .context("cannot read the admin token")?
                    .trim()
                    .to_owned();
            }
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    async fn start_node(&self, data_dir: &Path, i: usize) -> anyhow::Result<Node> {
        std::fs::create_dir_all(data_dir)?;
        // A restarted node writes its new address here: the old one must not be read.
        let url_file = data_dir.join("server.url");
        let _ = std::fs::remove_file(&url_file);
        let extra = [
            "--node-id".to_owned(),
            format!("n{}", i + 1),
            "--kek-file".to_owned(),
            self.kek.display().to_string(),
        ];
        let mut process = ServerProcess::start(data_dir, Some(self.database.expose()), &extra)?;
        let url = process
            .wait_healthy(data_dir)
            .await
            .with_context(|| format!("node n{} did not start", i + 1))?;
        Ok(Node {
            process,
            data_dir: data_dir.to_owned(),
            url,
        })
    }

    /// The leader as `node` reports it.
    async fn leader(&self, http: &reqwest::Client, node: usize) -> Option<String> {
        let view: serde_json::Value = http
            .get(format!("{}/api/v1/cluster", self.nodes.get(node)?.url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        view["leader"].as_str().map(str::to_owned)
    }
}

pub(crate) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if args.count == 0 || args.count > 100_000 || args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--count must be 1..=100000 and --concurrency 1..=1024");
    }
    if args.nodes.is_empty() || args.nodes.iter().any(|n| !(1..=5).contains(n)) {
        bail!("--nodes takes counts from 1 to 5, e.g. --nodes 1,2,3");
    }
    if args.kills > 100 {
        bail!("--kills must be at most 100");
    }
    let admin: DatabaseUrl = args.database.parse().map_err(|e| anyhow::anyhow!("--database: {e}"))?;
    if admin.backend() != Backend::Postgres {
        bail!("--database must be a postgres:// URL (several nodes need a shared PostgreSQL)");
    }
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let run_id = format!(
        "{}_{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp()
    );

    let csrs = Arc::new(prepare_csrs(args.count, "cluster-bench.internal").await?);

    let mut throughput: Vec<Throughput> = Vec::new();
    for &n in &args.nodes {
        let database = admin
            .create_postgres_database(&format!("ck_bench_{run_id}_{n}n"))
            .await
            .context("cannot create the benchmark database")?;
        let cluster = Cluster::start(&work.path().join(format!("issue{n}")), n, database).await?;
        eprintln!(
            "issuing {} certificates through {n} node(s), {} in flight…",
            args.count, args.concurrency
        );
        let mut measured = issue(&cluster, &csrs, args.concurrency).await?;
        let one = throughput
            .iter()
            .find(|t| t.nodes == 1)
            .map(|t| t.certificates_per_second);
        measured.ratio_to_one_node = one.map_or(1.0, |one| measured.certificates_per_second / one);
        throughput.push(measured);
        drop(cluster);
    }

    let failover = if args.kills > 0 {
        let database = admin
            .create_postgres_database(&format!("ck_bench_{run_id}_failover"))
            .await
            .context("cannot create the benchmark database")?;
        let mut cluster = Cluster::start(&work.path().join("failover"), 3, database).await?;
        Some(failover(&mut cluster, args.kills).await?)
    } else {
        None
    };

    let report = Report { throughput, failover };
    args.output.print(&report, print_text)
}

/// The figures as text.
fn print_text(report: &Report) {
    for t in &report.throughput {
        println!(
            "{} node(s): {} issuances in {:.2} s: {:.0} certificates/s ({:.2}x one node), p50 {:.1} ms, p99 {:.1} ms; \
             jobs claimed per node {:?}",
            t.nodes,
            t.count,
            t.seconds,
            t.certificates_per_second,
            t.ratio_to_one_node,
            t.p50_ms,
            t.p99_ms,
            t.claimed_per_node
        );
    }
    if let Some(f) = &report.failover {
        println!(
            "failover after kill -9 of the leader, {} kills: min {:.2} s, p50 {:.2} s, p90 {:.2} s, max {:.2} s, \
             mean {:.2} s (lease {} s, step-down after {} s)",
            f.kills,
            f.min_s,
            f.p50_s,
            f.p90_s,
            f.max_s,
            f.mean_s,
            ck_server::LEASE_TTL.as_secs(),
            ck_server::STEP_DOWN_AFTER.as_secs()
        );
    }
}

async fn issue(cluster: &Cluster, csrs: &Arc<Vec<String>>, concurrency: usize) -> anyhow::Result<Throughput> {
    let clients = cluster
        .nodes
        .iter()
        .map(|node| ck_client::Client::new(&node.url, &cluster.token))
        .collect::<Result<Vec<_>, _>>()?;
    let (latencies, elapsed) = issue_all(&clients, csrs.clone(), concurrency).await?;
    let http = reqwest::Client::new();
    let mut claimed_per_node = Vec::new();
    for node in &cluster.nodes {
        let text = http
            .get(format!("{}/metrics", node.url))
            .bearer_auth(&cluster.token)
            .send()
            .await?
            .text()
            .await?;
        let claimed = text
            .lines()
            .find_map(|line| line.strip_prefix("certkeeper_jobs_claimed_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        claimed_per_node.push(claimed as u64);
    }
    let seconds = elapsed.as_secs_f64();
    Ok(Throughput {
        nodes: cluster.nodes.len(),
        count: csrs.len(),
        seconds,
        certificates_per_second: csrs.len() as f64 / seconds,
        p50_ms: percentile_duration_ms(&latencies, 0.50),
        p99_ms: percentile_duration_ms(&latencies, 0.99),
        claimed_per_node,
        ratio_to_one_node: 1.0,
    })
}

async fn failover(cluster: &mut Cluster, kills: usize) -> anyhow::Result<Failover> {
    let http = reqwest::Client::new();
    let bar = indicatif::ProgressBar::new(kills as u64);
    let mut times = Vec::with_capacity(kills);
    for _ in 0..kills {
        // The current leader, as every node agrees.
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            let mut seen = Vec::new();
            for i in 0..cluster.nodes.len() {
                seen.push(cluster.leader(&http, i).await);
            }
            if let Some(Some(first)) = seen.first()
                && seen.iter().all(|s| s.as_deref() == Some(first.as_str()))
            {
                break first.clone();
            }
            if Instant::now() >= deadline {
                bail!("the nodes agree on no leader within 30 s: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let idx: usize = leader
            .trim_start_matches('n')
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < cluster.nodes.len())
            .with_context(|| format!("unexpected leader id {leader}"))?;
        let observer = (idx + 1) % cluster.nodes.len();
        let killed = Instant::now();
        cluster.nodes[idx].process.kill9();
        let took = loop {
            if let Some(now_leading) = cluster.leader(&http, observer).await
                && now_leading != leader
            {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no new leader within 60 s of killing {leader}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        times.push(took.as_secs_f64());
        let data_dir = cluster.nodes[idx].data_dir.clone();
        cluster.nodes[idx] = cluster.start_node(&data_dir, idx).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let all_s = times.clone();
    times.sort_by(f64::total_cmp);
    let at = |p: f64| percentile_of(&times, p).unwrap_or(0.0);
    Ok(Failover {
        kills,
        min_s: at(0.0),
        p50_s: at(0.5),
        p90_s: at(0.9),
        max_s: at(1.0),
        mean_s: times.iter().sum::<f64>() / times.len().max(1) as f64,
        all_s,
    })
}
