//! Several `certkeeper serve` nodes on one PostgreSQL: one leader, failover after `kill -9`
//! within the lease time, and an immediate handover on a graceful shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use ck_test_peers::pebble::{Pebble, PebbleOptions};

use crate::support::Server;

/// The test PostgreSQL's admin URL, or `None` (skipped) when there is none outside CI.
fn postgres_admin_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("CERTKEEPER_TEST_POSTGRES_URL") else {
        let required = std::env::var_os("CERTKEEPER_REQUIRE_PEERS").is_some() || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "CERTKEEPER_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh"
        );
        eprintln!("SKIPPED: cluster tests need PostgreSQL (run scripts/test.sh)");
        return None;
    };
    Some(admin_url)
}

/// A fresh database on the test PostgreSQL cluster, or `None` (skipped) when there is none.
pub(crate) fn fresh_database() -> Option<String> {
    let admin_url = postgres_admin_url()?;
    // Tests run in parallel in one process: one database each.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("ck_cluster_{}_{n}", std::process::id());
    let out = Command::new("psql")
        .args([admin_url.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql (postgresql-client) is installed by scripts/install-deps.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let base = admin_url.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap();
    Some(format!("{base}/{name}"))
}

/// Node `n` of a test cluster on `database`, logging at info level: its data directory
/// under `dir`, and the key-encryption key every node shares (`dir/cluster.kek`).
fn node(dir: &std::path::Path, database: &str, n: u32, extra: &[&str]) -> Server {
    let kek = dir.join("cluster.kek");
    let node_id = format!("n{n}");
    let mut args = vec![
        "--database",
        database,
        "--node-id",
        &node_id,
        "--kek-file",
        kek.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start_logged(&dir.join(format!("node{n}")), &args, "info")
}

/// Three nodes with the config file `config_yaml` and no per-token rate limit (the tests load
/// them with one token): the nodes, the admin token, their URLs.
fn three_nodes(dir: &std::path::Path, database: &str, config_yaml: &str) -> (Vec<Server>, String, Vec<String>) {
    let config = dir.join("config.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    let extra = ["--config", config.to_str().unwrap(), "--token-rate-limit", "0"];
    let first = node(dir, database, 1, &extra);
    let token = first.token();
    let nodes = vec![first, node(dir, database, 2, &extra), node(dir, database, 3, &extra)];
    let urls = nodes.iter().map(|n| n.url.clone()).collect();
    (nodes, token, urls)
}

/// A config file (in `dir`) defining solver `pebble-http`, Pebble's validation port: every node
/// needs it to run an issuer that names it.
fn solvers_config(dir: &std::path::Path, pebble: &Pebble) -> String {
    let path = dir.join("solvers.yaml");
    std::fs::write(&path, crate::acme::solvers_yaml(pebble)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Adds Pebble as issuer `pebble` (http-01 on Pebble's validation port, solver `pebble-http`
/// of the nodes' config file) through `node`.
fn add_pebble_issuer(node: &Server, pebble: &Pebble) {
    node.cli_ok(&[
        "issuer",
        "add",
        "acme",
        "pebble",
        "--directory",
        &pebble.directory_url(),
        "--ca-bundle",
        pebble.tls_ca_pem_path().to_str().unwrap(),
        "--challenge",
        "http-01",
        "--solver",
        "pebble-http",
    ]);
}

/// A node's `/metrics` text (empty when it does not answer within 2 s); `token` needs the
/// `metrics` scope (the admin token has it).
fn metrics_of(url: &str, token: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-m",
            "2",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{url}/metrics"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cluster(url: &str, token: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-m",
            "2",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{url}/api/v1/cluster"),
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until `url` reports a leader other than `not` (and not `None`); returns it with the
/// epoch and how long it took.
fn wait_for_new_leader(url: &str, token: &str, not: &str, since: Instant) -> (String, i64, Duration) {
    loop {
        if let Some(view) = cluster(url, token)
            && let Some(leader) = view["leader"].as_str()
            && leader != not
        {
            return (leader.to_owned(), view["epoch"].as_i64().unwrap(), since.elapsed());
        }
        assert!(since.elapsed() < Duration::from_secs(30), "no new leader within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_nodes_fail_over_and_hand_over() {
    let Some(database) = fresh_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Every node must decrypt the same secrets: one key-encryption key for all.
    let start = |n: u32| node(dir.path(), &database, n, &[]);
    let mut nodes = vec![start(1)];
    let token = nodes[0].token();
    nodes.push(start(2));
    nodes.push(start(3));
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();

    // One leader, seen alike by every node; three nodes listed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let views: Vec<Value> = urls.iter().filter_map(|u| cluster(u, &token)).collect();
        if views.len() == 3
            && views
                .iter()
                .all(|v| v["leader"] == views[0]["leader"] && !v["leader"].is_null())
            && views[0]["nodes"].as_array().unwrap().len() == 3
        {
            break views[0].clone();
        }
        assert!(Instant::now() < deadline, "no agreed leader: {views:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let leader = first["leader"].as_str().unwrap().to_owned();
    let roles: Vec<&str> = first["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{first}");

    // SIGSTOP the leader past its lease: another node takes over in a new term. On SIGCONT
    // the old one finds its renewal three seconds stale, steps down before doing anything, and
    // any write it still tried would carry the old epoch, which the database refuses.
    let paused_idx: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let signal = |sig: &str, pid: u32| {
        assert!(
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    let paused_at = Instant::now();
    signal("-STOP", nodes[paused_idx].pid());
    let (leader, epoch, takeover) = wait_for_new_leader(&urls[(paused_idx + 1) % 3], &token, &leader, paused_at);
    assert!(epoch > first["epoch"].as_i64().unwrap());
    signal("-CONT", nodes[paused_idx].pid());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if metrics_of(&urls[paused_idx], &token).contains("certkeeper_node_role 2") {
            break;
        }
        assert!(Instant::now() < deadline, "the resumed node still thinks it leads");
        std::thread::sleep(Duration::from_millis(100));
    }
    let view = cluster(&urls[paused_idx], &token).unwrap();
    assert_eq!(
        (view["leader"].as_str(), view["epoch"].as_i64()),
        (Some(leader.as_str()), Some(epoch))
    );

    // kill -9 the leader: another node takes over once the lease runs out (6 s).
    let leader_idx: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let observer = urls[(leader_idx + 1) % 3].clone();
    let killed = Instant::now();
    nodes[leader_idx].kill9();
    let (second, second_epoch, failover) = wait_for_new_leader(&observer, &token, &leader, killed);
    assert!(second_epoch > epoch, "a new term: {epoch} -> {second_epoch}");
    assert!(failover < Duration::from_secs(9), "failover took {failover:?}");

    // A graceful shutdown of the new leader hands over at once (the lease is released).
    let second_idx: usize = second.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let third_observer = (0..3).find(|i| *i != leader_idx && *i != second_idx).unwrap();
    let stopped = Instant::now();
    nodes[second_idx].stop();
    let (third, third_epoch, handover) = wait_for_new_leader(&urls[third_observer], &token, &second, stopped);
    assert_eq!(third, format!("n{}", third_observer + 1));
    assert!(third_epoch > second_epoch);
    assert!(handover < Duration::from_secs(3), "handover took {handover:?}");
    eprintln!(
        "cluster: takeover from a paused leader in {takeover:?}, failover after kill -9 in {failover:?} \
         (lease 6 s), handover on shutdown in {handover:?}"
    );

    // The survivor's metrics say it leads.
    let text = metrics_of(&urls[third_observer], &token);
    assert!(text.contains("certkeeper_node_role 1"), "{text}");
}

fn psql(database: &str, query: &str) -> String {
    let out = Command::new("psql")
        .args([database, "-tAq", "-c", query])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn count(database: &str, query: &str) -> i64 {
    psql(database, query).parse().unwrap_or(-1)
}

/// 500 certificates of the local CA fall due at once on a three-node cluster; the leader and
/// then a second node are killed with `kill -9` during the storm. The survivor takes the
/// lease, takes back the dead nodes' jobs when their claims run out, and every certificate
/// ends up renewed exactly once: one new version each, one succeeded renewal job each.
#[test]
fn renewal_storm_survives_killed_nodes_exactly_once() {
    renewal_storm(false, false);
}

/// The storm again, with the leader paused (SIGSTOP) instead of killed, in the middle of its
/// work, until another node has taken over and finished; then it resumes (SIGCONT). Whatever
/// it was doing lands nowhere: its job results are refused (the jobs were taken over) and so
/// would be its renewal scan (stale epoch). Still exactly one renewal per certificate.
#[test]
fn renewal_storm_with_a_paused_leader_renews_exactly_once() {
    renewal_storm(false, true);
}

/// The same storm with certificates of an ACME CA (Pebble): the dead nodes' orders are taken
/// up again by the survivor from the URLs their jobs recorded, so Pebble finalizes exactly one
/// order per issuance and one per renewal.
#[test]
fn acme_renewal_storm_finalizes_one_order_per_certificate() {
    renewal_storm(true, false);
}

/// Renewal jobs by state, with an error each, for failure messages.
const JOB_SUMMARY: &str = "SELECT state || ': ' || count(*) || ' ' || coalesce(max(last_error), '') FROM jobs \
                           WHERE kind = 'renew' GROUP BY state";

fn renewal_storm(acme: bool, pause_leader: bool) {
    let Some(database) = fresh_database() else {
        return;
    };
    // Several nodes on one host cannot all answer http-01 on one port, and this test is
    // about orders, not challenges: Pebble takes every challenge as valid.
    let pebble = if acme {
        let options = PebbleOptions {
            always_valid: true,
            ..PebbleOptions::default()
        };
        let Some(pebble) = Pebble::start(options, "cluster-acme-storm") else {
            return;
        };
        Some(pebble)
    } else {
        None
    };
    const N: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    // Sixteen orders in flight per node keep Pebble (and a two-core machine) out of timeouts.
    let solvers = pebble.as_ref().map(crate::acme::solvers_yaml).unwrap_or_default();
    let (mut nodes, token, urls) = three_nodes(
        dir.path(),
        &database,
        // A loaded CI machine can make Pebble miss the 30 s answer deadline now and then: such
        // an order is retried (quickly, and more often than by default) rather than failed, so
        // the test stays about what it checks, one finalized order per certificate.
        &format!(
            "scheduler_interval_seconds: 1\njobs:\n  lease_seconds: 5\n  max_attempts: 20\n  \
             retry_base_delay_seconds: 1\n  retry_max_delay_seconds: 5\nacme:\n  concurrency: 16\n{solvers}"
        ),
    );
    let issuer = match &pebble {
        Some(pebble) => {
            // Added through one node; the others load it from the database when they need it.
            add_pebble_issuer(&nodes[0], pebble);
            "pebble"
        }
        None => "local",
    };

    // 500 issued certificates, created through all three nodes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = tokio::task::JoinSet::new();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..16 {
            let (http, urls, token, next) = (http.clone(), urls.clone(), token.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= N {
                        return;
                    }
                    let answer = http
                        .post(format!("{}/api/v1/certificates?wait=120", urls[i % 3]))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"common_name": format!("storm-{i}.example.com"), "issuer": issuer}))
                        .send()
                        .await
                        .unwrap();
                    // 202: still being issued after the wait (a retried order), checked below.
                    let status = answer.status().as_u16();
                    assert!(
                        matches!(status, 201 | 202),
                        "{status}: {}",
                        answer.text().await.unwrap()
                    );
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    let issued_by = Instant::now() + Duration::from_secs(300);
    while count(&database, "SELECT count(*) FROM certificates WHERE current_version = 1") < N as i64 {
        assert!(
            Instant::now() < issued_by,
            "not all {N} certificates issued within 300 s: {}",
            psql(
                &database,
                "SELECT state || ': ' || count(*) || ' ' || coalesce(max(last_error), '') FROM jobs GROUP BY state"
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // All due now. Kill the leader, then another node, while the storm runs.
    let leader = cluster(&urls[0], &token).unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_owned();
    let leader_idx: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;
    let worker_idx = (leader_idx + 1) % 3;
    let survivor = 3 - leader_idx - worker_idx;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let started = Instant::now();
    psql(&database, &format!("UPDATE certificates SET renew_at = {now_ms}"));
    // Local CA: the moment the leader's scan has enqueued the renewals. ACME: once orders are
    // under way on every node, so the dead nodes leave orders placed and not finished.
    let leader_at_work =
        format!("SELECT count(*) FROM jobs WHERE kind = 'renew' AND state = 'running' AND lease_owner = '{leader}'");
    let in_the_middle = if acme {
        "SELECT count(*) FROM certificates WHERE current_version >= 2"
    } else if pause_leader {
        // Paused while it holds claimed jobs, so it has results to hand in when it resumes.
        leader_at_work.as_str()
    } else {
        "SELECT count(*) FROM jobs WHERE kind = 'renew'"
    };
    let threshold = if acme { 50 } else { 1 };
    while count(&database, in_the_middle) < threshold {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no renewals under way within 30 s: {}\n{}",
            psql(&database, JOB_SUMMARY),
            nodes[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let in_flight = count(&database, "SELECT count(*) FROM acme_orders");
    let paused_pid = nodes[leader_idx].pid().to_string();
    if pause_leader {
        assert!(
            Command::new("kill")
                .args(["-STOP", &paused_pid])
                .status()
                .unwrap()
                .success()
        );
    } else {
        nodes[leader_idx].kill9();
    }
    nodes[worker_idx].kill9();
    let before_kill = count(
        &database,
        "SELECT count(*) FROM certificates WHERE current_version >= 2",
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let renewed = count(
            &database,
            "SELECT count(*) FROM certificates WHERE current_version >= 2",
        );
        if renewed == N as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {renewed} of {N} renewed after 180 s: {}\n{}",
            psql(&database, JOB_SUMMARY),
            nodes[survivor].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = started.elapsed();
    if pause_leader {
        // Past its lease: another node takes over before the old leader wakes up.
        let (new_leader, _, _) = wait_for_new_leader(&urls[survivor], &token, &leader, started);
        assert_eq!(new_leader, format!("n{}", survivor + 1));
        assert!(
            Command::new("kill")
                .args(["-CONT", &paused_pid])
                .status()
                .unwrap()
                .success()
        );
    }
    // Give a duplicate every chance to show up before counting.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(&database, "SELECT count(*) FROM certificates WHERE current_version = 2"),
        N as i64
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM certificate_versions"),
        2 * N as i64
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM jobs WHERE kind = 'renew' AND state = 'succeeded'"
        ),
        N as i64
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')"
        ),
        0
    );
    let by_node = psql(
        &database,
        "SELECT actor || ':' || count(*) FROM audit_events WHERE action = 'certificate.renewed' GROUP BY actor",
    );
    let resumed = nodes[survivor]
        .log_text()
        .matches("resuming the order of an earlier attempt")
        .count();
    let orders = match &pebble {
        Some(pebble) => {
            // One finalized order per issuance and per renewal: none twice, none lost.
            assert_eq!(pebble.issued_count(), 2 * N, "Pebble's finalized orders");
            format!(
                "; {in_flight} orders were under way at the kill; Pebble finalized {} orders; the survivor \
                 resumed {resumed}",
                2 * N
            )
        }
        None => String::new(),
    };
    let paused = if pause_leader {
        let log = nodes[leader_idx].log_text();
        let dropped = log.matches("result dropped").count();
        let fenced = log.matches("fenced").count();
        format!("; the paused leader resumed: {dropped} job results and {fenced} fenced writes refused")
    } else {
        String::new()
    };
    let how = if pause_leader { "paused" } else { "killed" };
    eprintln!(
        "storm ({issuer}): {N} renewals, leader {how} and a worker killed after {before_kill} were done; all done \
         once in {elapsed:?}; survivor n{}; audit {by_node}{orders}{paused}",
        survivor + 1
    );
    // The storm may be over before the dead leader's lease has run out: wait for the takeover.
    let (new_leader, _, _) = wait_for_new_leader(&urls[survivor], &token, &leader, started);
    assert_eq!(new_leader, format!("n{}", survivor + 1));
}

/// A PostgreSQL of this test's own (it is stopped and started again), from the project's
/// script; `None` (skipped) where the other cluster tests skip too.
fn own_postgres(dir: &std::path::Path, port: Option<u16>) -> Option<String> {
    postgres_admin_url()?;
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts");
    let mut command = Command::new(scripts.join("start-postgres.sh"));
    command.arg(dir).stdin(std::process::Stdio::null());
    if let Some(port) = port {
        command.arg(port.to_string());
    }
    let out = command.output().expect("scripts/start-postgres.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn stop_postgres(dir: &std::path::Path) {
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts");
    let out = Command::new(scripts.join("stop-services.sh"))
        .arg(dir)
        .output()
        .expect("scripts/stop-services.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// PostgreSQL stops for 30 s under a read load on three nodes: every read of a certificate or
/// its chain still succeeds (from the nodes' caches), writes get 503 with `Retry-After` at
/// once, and when PostgreSQL is back the cluster elects a leader, issues again, and writes the
/// audit records of the refused calls, without anyone touching the nodes.
#[test]
fn database_outage_serves_cached_reads_refuses_writes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = dir.path().join("pg");
    let Some(database) = own_postgres(&pg_dir, None) else {
        return;
    };
    let port: u16 = database
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let (_nodes, token, urls) = three_nodes(
        dir.path(),
        &database,
        "scheduler_interval_seconds: 1\njobs:\n  lease_seconds: 5\n",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let create = |url: String, name: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            http.post(format!("{url}/api/v1/certificates?wait=30"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"common_name": name}))
                .send()
                .await
        }
    };
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..20 {
            let answer = create(urls[i % 3].clone(), format!("outage-{i}.internal"))
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 201);
            let body: Value = answer.json().await.unwrap();
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        ids
    });

    // Every node reads every certificate and chain once (what a node has not read, it cannot
    // serve during an outage); then the read load runs until the end.
    rt.block_on(async {
        for url in &urls {
            for id in &ids {
                for path in [format!("certificates/{id}"), format!("certificates/{id}/pem")] {
                    let answer = http
                        .get(format!("{url}/api/v1/{path}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert!(answer.status().is_success());
                }
            }
        }
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (http, token, urls, ids, stop) = (http.clone(), token.clone(), urls.clone(), ids.clone(), stop.clone());
        rt.spawn(async move {
            let (mut ok, mut failed) = (0_u64, Vec::new());
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
                for url in &urls {
                    for id in &ids {
                        for path in [format!("certificates/{id}"), format!("certificates/{id}/pem")] {
                            let answer = http
                                .get(format!("{url}/api/v1/{path}"))
                                .bearer_auth(&token)
                                .send()
                                .await;
                            match answer {
                                Ok(a) if a.status().is_success() => ok += 1,
                                Ok(a) => failed.push(format!(
                                    "{path}: {} {}",
                                    a.status(),
                                    a.text().await.unwrap_or_default()
                                )),
                                Err(e) => failed.push(format!("{path}: {e}")),
                            }
                        }
                    }
                }
                // A steady load, not a CPU hog: tests run beside each other on a small machine.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // PostgreSQL goes away for 30 s.
    let outage = Instant::now();
    stop_postgres(&pg_dir);
    let mut refused = 0;
    let refusal = rt.block_on(async {
        loop {
            let answer = create(urls[refused % 3].clone(), format!("refused-{refused}.internal"))
                .await
                .unwrap();
            refused += 1;
            if answer.status().as_u16() == 503
                && answer
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"))
            {
                let retry_after = answer
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: Value = answer.json().await.unwrap();
                break (retry_after, body, outage.elapsed());
            }
            assert!(
                outage.elapsed() < Duration::from_secs(10),
                "writes were not refused within 10 s"
            );
        }
    });
    assert_eq!(refusal.0.as_deref(), Some("5"), "{refusal:?}");
    assert_eq!(
        refusal.1["type"].as_str().map(|t| t.ends_with("database-unreachable")),
        Some(true),
        "{refusal:?}"
    );
    // Once each node's probe has seen the outage (metric `database_up 0`), it refuses writes
    // at once, without waiting on the connection pool.
    for url in &urls {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if metrics_of(url, &token).contains("certkeeper_database_up 0") {
                break;
            }
            assert!(Instant::now() < deadline, "{url} did not notice the outage within 10 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    rt.block_on(async {
        for url in &urls {
            let asked = Instant::now();
            let answer = create(url.clone(), format!("refused-{refused}.internal"))
                .await
                .unwrap();
            refused += 1;
            assert_eq!(answer.status().as_u16(), 503);
            assert!(asked.elapsed() < Duration::from_millis(500), "{:?}", asked.elapsed());
        }
    });
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));

    // PostgreSQL is back on the same port.
    own_postgres(&pg_dir, Some(port)).unwrap();
    let back = Instant::now();
    rt.block_on(async {
        for (i, url) in urls.iter().enumerate() {
            loop {
                let answer = create(url.clone(), format!("after-{i}.internal")).await.unwrap();
                match answer.status().as_u16() {
                    201 => {
                        let body: Value = answer.json().await.unwrap();
                        assert_eq!(body["status"], "active", "{body}");
                        break;
                    }
                    // Until the node's probe has seen the database back.
                    503 => refused += 1,
                    other => panic!("{other}: {}", answer.text().await.unwrap()),
                }
                assert!(
                    back.elapsed() < Duration::from_secs(30),
                    "node {url} does not write again"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let converged = back.elapsed();
    let view = loop {
        let views: Vec<Value> = urls.iter().filter_map(|u| cluster(u, &token)).collect();
        if views.len() == 3 && !views[0]["leader"].is_null() && views.iter().all(|v| v["leader"] == views[0]["leader"])
        {
            break views[0].clone();
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no agreed leader after the outage: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, failed) = rt.block_on(reader).unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} reads failed: {:?}",
        failed.len(),
        reads + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );

    // The refused calls are in the audit trail: their records waited for the database.
    let deadline = Instant::now() + Duration::from_secs(10);
    let audited = loop {
        let n = count(&database, "SELECT count(*) FROM audit_events WHERE status = 503");
        if n >= refused as i64 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(audited, refused as i64, "audit records of refused writes");
    eprintln!(
        "outage: writes refused {:?} after PostgreSQL stopped; {reads} reads during the test, none failed; \
         {refused} writes refused with 503 and audited later; every node wrote again {converged:?} after \
         PostgreSQL was back; leader {} (epoch {})",
        refusal.2, view["leader"], view["epoch"]
    );
    stop_postgres(&pg_dir);
}

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// A revocation through one node reaches the other's OCSP answers and CRL at once (a notice
/// through PostgreSQL), not when their caches would have run out (an hour, half a day); so do
/// a new token and a token's revocation.
#[test]
fn revocations_through_one_node_reach_every_node_at_once() {
    let Some(database) = fresh_database() else {
        return;
    };
    assert!(crate::support::require_peer("openssl", "openssl"));
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let start = |n: u32| node(work, &database, n, &[]);
    let first = start(1);
    let second = start(2);
    let cert: Value =
        serde_json::from_str(&first.cli_ok(&["cert", "create", "revoke-me.internal", "--wait", "--json"])).unwrap();
    let id = cert["id"].as_str().unwrap();
    let chain = first.cli_ok(&["cert", "get", id, "--pem"]);
    let (leaf, intermediate) = chain.split_at(chain.find("-----END CERTIFICATE-----").unwrap() + 26);
    std::fs::write(work.join("leaf.pem"), leaf).unwrap();
    std::fs::write(work.join("intermediate.pem"), intermediate.trim_start()).unwrap();
    std::fs::write(work.join("root.pem"), first.cli_ok(&["issuer", "ca", "local"])).unwrap();
    let serial = openssl(&["x509", "-in", "leaf.pem", "-noout", "-serial"], work)
        .trim()
        .trim_start_matches("serial=")
        .to_uppercase();

    let ocsp_url = format!("{}/pki/ocsp/local", second.url);
    // Without a nonce, so the second node answers from its cache after the first time.
    let ask = || {
        openssl(
            &[
                "ocsp",
                "-issuer",
                "intermediate.pem",
                "-cert",
                "leaf.pem",
                "-url",
                &ocsp_url,
                "-CAfile",
                "root.pem",
                "-no_nonce",
            ],
            work,
        )
    };
    for _ in 0..2 {
        assert!(ask().contains("leaf.pem: good"));
    }
    let crl_lists_serial = || {
        let out = Command::new("curl")
            .args(["-sf", "-o", "crl.der", &format!("{}/pki/crl/local", second.url)])
            .current_dir(work)
            .status()
            .unwrap();
        assert!(out.success());
        openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], work)
            .to_uppercase()
            .contains(&serial)
    };
    assert!(!crl_lists_serial());

    first.cli_ok(&["cert", "revoke", id, "--reason", "keyCompromise"]);
    let revoked = Instant::now();
    loop {
        let answer = ask();
        if answer.contains("leaf.pem: revoked") {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "the second node still answers: {answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ocsp_after = revoked.elapsed();
    while !crl_lists_serial() {
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "the second node's CRL lacks {serial}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let crl_after = revoked.elapsed();

    // A token made through the first node works on the second at once, and stops at once
    // when revoked through the first (the periodic reload would take up to 10 s).
    let token = first
        .cli_ok(&["token", "create", "--name", "ci", "--scope", "read"])
        .lines()
        .find_map(|line| line.split_whitespace().find(|word| word.starts_with("ck_")))
        .unwrap()
        .to_owned();
    let status = |token: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("{}/api/v1/certificates", second.url),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let made = Instant::now();
    while status(&token) != "200" {
        assert!(
            made.elapsed() < Duration::from_secs(5),
            "the new token does not work on the second node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let token_live_after = made.elapsed();
    first.cli_ok(&["token", "revoke", "ci"]);
    let token_revoked = Instant::now();
    while status(&token) != "401" {
        assert!(
            token_revoked.elapsed() < Duration::from_secs(5),
            "the revoked token still works on the second node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "revocation through n1: n2's OCSP says revoked after {ocsp_after:?}, its CRL lists it after {crl_after:?}; \
         a token made through n1 works on n2 after {token_live_after:?}, is refused there {:?} after its revocation",
        token_revoked.elapsed()
    );
}

/// The ACME account is one per issuer across the cluster: a key rollover through one node
/// reaches the other (which would otherwise sign with a key the CA has dropped), and after a
/// deactivation two nodes registering at the same moment end up on one account.
#[test]
fn acme_account_changes_reach_every_node() {
    let Some(database) = fresh_database() else {
        return;
    };
    let options = PebbleOptions {
        always_valid: true,
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "cluster-acme-account") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = solvers_config(dir.path(), &pebble);
    let start = |n: u32| node(dir.path(), &database, n, &["--config", &config]);
    let first = start(1);
    let token = first.token();
    let second = start(2);
    add_pebble_issuer(&first, &pebble);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    // Created through `node` and issued by `node`'s own worker or another's: both must work.
    let issue = |node: &Server, name: &str| {
        let (http, token, url, name) = (http.clone(), token.clone(), node.url.clone(), name.to_owned());
        async move {
            let answer = http
                .post(format!("{url}/api/v1/certificates?wait=60"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"common_name": name, "issuer": "pebble"}))
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap();
            assert_eq!(
                (status, body["status"].as_str()),
                (201, Some("active")),
                "{name}: {body}"
            );
        }
    };
    let account_url = |node: &Server| -> String {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("{}/api/v1/issuers/pebble", node.url),
            ])
            .output()
            .unwrap();
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        view["account_url"].as_str().unwrap_or_default().to_owned()
    };
    rt.block_on(issue(&second, "before-rollover.example.com"));

    first.cli_ok(&["issuer", "rollover-key", "pebble"]);
    rt.block_on(issue(&second, "after-rollover.example.com"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !second.log_text().contains("another node changed the ACME account") {
        assert!(
            Instant::now() < deadline,
            "the second node did not hear of the rollover"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Deactivated through the first node; both nodes then order at once and each registers.
    let old_account = account_url(&first);
    first.cli_ok(&["issuer", "deactivate-account", "pebble", "--yes"]);
    rt.block_on(async {
        tokio::join!(
            issue(&first, "race-1.example.com"),
            issue(&second, "race-2.example.com"),
        )
    });
    let (one, two) = (account_url(&first), account_url(&second));
    assert!(!one.is_empty() && one != old_account, "{one}");
    assert_eq!(one, two, "both nodes show the one stored account");
    rt.block_on(issue(&first, "after-race-1.example.com"));
    rt.block_on(issue(&second, "after-race-2.example.com"));
    let lost = first.log_text().matches("registered the account first").count()
        + second.log_text().matches("registered the account first").count();
    eprintln!(
        "acme account: rollover heard by the other node; after deactivation {lost} node(s) lost the registration race and took the winner's account"
    );
}

/// Behind one name, the CA's http-01 request reaches whichever node it reaches: here only the
/// first node can listen on the validation port, the second places the orders, and Pebble
/// validates them all through the first (the answers are shared through the database).
#[test]
fn http01_answers_come_from_any_node() {
    let Some(database) = fresh_database() else {
        return;
    };
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "cluster-http01") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = solvers_config(dir.path(), &pebble);
    let start = |n: u32| node(dir.path(), &database, n, &["--config", &config]);
    let first = start(1);
    let token = first.token();
    add_pebble_issuer(&first, &pebble);
    let second = start(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..6 {
            let (http, token, url) = (http.clone(), token.clone(), second.url.clone());
            tasks.spawn(async move {
                let answer = http
                    .post(format!("{url}/api/v1/certificates?wait=60"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"common_name": format!("any-node-{i}.example.com"), "issuer": "pebble"}))
                    .send()
                    .await
                    .unwrap();
                let body: Value = answer.json().await.unwrap();
                assert_eq!(body["status"], "active", "{body}");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    let by_second = second.log_text().matches("certificate issued").count();
    assert!(by_second > 0, "the second node placed no order:\n{}", second.log_text());
    assert!(
        second.log_text().contains("cannot listen for ACME challenges"),
        "the second node was expected not to get the validation port"
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM acme_http01"),
        0,
        "answers withdrawn"
    );
    eprintln!(
        "http-01: {by_second} of 6 orders placed by the node without the validation port, validated through the other"
    );
}
