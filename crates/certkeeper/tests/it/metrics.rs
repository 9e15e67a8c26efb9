//! `/metrics` checked by promtool (the Prometheus project's own linter), with its families and
//! a bound on its series; and the shipped alert rules checked and unit-tested by promtool.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{Server, require_peer};

/// `/metrics` with a token that has the `metrics` scope (the admin token has every operator scope).
fn scrape(url: &str, token: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{url}/metrics"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Samples per metric name (histogram buckets, sums and counts count under their own names).
fn series(text: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap().to_owned();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn metrics_pass_promtool_and_grow_only_by_certificates() {
    if !require_peer("promtool", "prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // One notifier, so the notification families have series; the series that name certificates
    // and tokens on (they are off by default), and the store read at every scrape.
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "notifications:\n  notifiers:\n    - name: sink\n      type: command\n      program: /bin/true\n\
         metrics:\n  named_series: true\n  refresh_seconds: 0.05\n",
    )
    .unwrap();
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let token = server.token();
    for i in 0..3 {
        server.cli_ok(&["cert", "create", &format!("m{i}.internal"), "--wait"]);
    }
    let listed: serde_json::Value = serde_json::from_str(&server.cli_ok(&["cert", "list", "--json"])).unwrap();
    let first = listed[0]["id"].as_str().unwrap().to_owned();
    server.cli_ok(&["cert", "revoke", &first]);
    server.cli_ok(&["token", "create", "--name", "ci", "--scope", "read", "--expires", "30d"]);
    // The issued and revoked events reach the notifier within a delivery poll (1 s).
    let delivered = "certkeeper_notifications{notifier=\"sink\",state=\"delivered\"} 4";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = scrape(&server.url, &token);
        if text.contains(delivered) || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let (ok, lint) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics: {lint}\n{text}");

    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for family in [
        "certkeeper_certificates",
        "certkeeper_certificates_earliest_expiry_timestamp_seconds",
        "certkeeper_certificates_earliest_renewal_window_start_timestamp_seconds",
        "certkeeper_tokens_earliest_expiry_timestamp_seconds",
        "certkeeper_ocsp_cached_responses",
        "certkeeper_certificate_expiry_timestamp_seconds",
        "certkeeper_certificate_renewal_window_start_timestamp_seconds",
        "certkeeper_jobs",
        "certkeeper_jobs_oldest_runnable_age_seconds",
        "certkeeper_jobs_claimed_total",
        "certkeeper_issuances_total",
        "certkeeper_issuance_duration_seconds",
        "certkeeper_dns_propagation_seconds",
        "certkeeper_revocations_total",
        "certkeeper_agents",
        "certkeeper_token_expiry_timestamp_seconds",
        "certkeeper_node_role",
        "certkeeper_lease_transitions_total",
        "certkeeper_database_up",
        "certkeeper_build_info",
        "certkeeper_notifications",
        "certkeeper_notification_attempts_total",
    ] {
        assert!(families.contains(&family), "{family} missing from {families:?}");
    }
    for line in [
        "certkeeper_certificates{status=\"active\",issuer=\"local\"} 2",
        "certkeeper_certificates{status=\"revoked\",issuer=\"local\"} 1",
        "certkeeper_issuances_total{kind=\"issue\",issuer=\"local\",outcome=\"success\"} 3",
        "certkeeper_revocations_total{issuer=\"local\",outcome=\"success\"} 1",
        "certkeeper_issuance_duration_seconds_count{issuer=\"local\",challenge=\"none\"} 3",
        "certkeeper_notifications{notifier=\"sink\",state=\"dead\"} 0",
        delivered,
        "certkeeper_notification_attempts_total{notifier=\"sink\",outcome=\"delivered\"} 4",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(text.contains("certkeeper_token_expiry_timestamp_seconds{name=\"ci\"}"));

    // Twenty more certificates add two series each (expiry and renewal time), nothing else.
    let before = series(&text);
    for i in 2..22 {
        server.cli_ok(&["cert", "create", &format!("m{i}.internal"), "--wait"]);
    }
    let after = series(&scrape(&server.url, &token));
    for (name, n) in &after {
        let was = before.get(name).copied().unwrap_or(0);
        let grown = if name.starts_with("certkeeper_certificate_expiry")
            || name.starts_with("certkeeper_certificate_renewal_window")
        {
            20
        } else {
            0
        };
        assert_eq!(*n, was + grown, "{name}: {was} series before, {n} after");
    }
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    if !require_peer("promtool", "prometheus") {
        return;
    }
    let (ok, text) = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["test", "rules", "alerts_test.yml"], None);
    assert!(ok, "{text}");
}

/// `--log-format logfmt`: every line is `key=value` pairs, and the lines of an API request carry
/// the request id its client sent.
#[test]
fn logfmt_logs_carry_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_logged(&data, &["--log-format", "logfmt"], "debug");
    let token = server.token();
    let headers = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "x-request-id: trace-me-42",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/api/v1/certificates", server.url))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(headers.contains("x-request-id: trace-me-42"), "{headers}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = server.log_text();
        if text.contains("request_id=trace-me-42") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let request_lines: Vec<&str> = text.lines().filter(|l| l.contains("request_id=trace-me-42")).collect();
    assert!(
        request_lines.iter().any(|l| l.contains("status=200")),
        "no request line:\n{text}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("ts=") && line.contains(" level="),
            "not logfmt: {line}"
        );
    }
}
