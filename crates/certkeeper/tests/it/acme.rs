//! ACME issuance end to end: the real binary against a real Pebble (and BIND for RFC 2136),
//! every chain checked by `openssl verify` against Pebble's own root.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ck_test_peers::bind::Bind;
use ck_test_peers::pebble::{EAB_KEYS, Pebble, PebbleDns, PebbleOptions, openssl_verify_chain};
use serde_json::Value;

use crate::support::Server;

/// A server tuned for tests: quick retries, a quick scheduler, health checks every 2 s.
pub(crate) fn start_server(dir: &Path, extra_yaml: &str, level: &str) -> Server {
    start_server_with(dir, extra_yaml, level, &[])
}

fn start_server_with(dir: &Path, extra_yaml: &str, level: &str, args: &[&str]) -> Server {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "scheduler_interval_seconds: 1\njobs:\n  max_attempts: 20\n  retry_base_delay_seconds: 1\n  \
             retry_max_delay_seconds: 2\nacme:\n  health_check_interval_seconds: 2\n{extra_yaml}"
        ),
    )
    .unwrap();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start_logged(&dir.join("data"), &all, level)
}

pub(crate) fn add_issuer(server: &Server, pebble: &Pebble, id: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "issuer",
        "add",
        "acme",
        id,
        "--directory",
        &*Box::leak(pebble.directory_url().into_boxed_str()),
        "--email",
        "ops@example.com",
        "--ca-bundle",
        pebble.tls_ca_pem_path().to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&server.cli_ok(&args)).unwrap()
}

pub(crate) fn create(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["cert", "create", "--wait", "--timeout", "120", "--json"];
    all.extend_from_slice(args);
    let out = server.cli(&all);
    assert!(
        out.status.success(),
        "cert create {args:?} failed: {}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn chain_of(server: &Server, id: &str) -> String {
    server.cli_ok(&["cert", "get", id, "--pem"])
}

fn assert_verifies(pebble: &Pebble, chain: &str) {
    if let Err(openssl) = openssl_verify_chain(pebble.issuer_root_pem_path(), chain) {
        panic!("openssl verify failed: {openssl}\n{chain}");
    }
}

/// The config file's challenge listeners for Pebble's validation ports: solver `pebble-http`
/// (http-01) and `pebble-alpn` (tls-alpn-01). Issuers added through the API can only name
/// listeners, never give addresses.
pub(crate) fn solvers_yaml(pebble: &Pebble) -> String {
    format!(
        "acme_solvers:\n  pebble-http:\n    http01: {{listen: \"127.0.0.1:{}\"}}\n  pebble-alpn:\n    \
         tls_alpn01: {{listen: \"127.0.0.1:{}\"}}\n",
        pebble.http_port(),
        pebble.tls_port()
    )
}

/// `issuer add` flags for http-01 on Pebble's validation port (the server's config file needs
/// [`solvers_yaml`]).
pub(crate) fn http01_args(_pebble: &Pebble) -> Vec<String> {
    vec![
        "--challenge".into(),
        "http-01".into(),
        "--solver".into(),
        "pebble-http".into(),
    ]
}

pub(crate) fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn sans_of(chain: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaf.pem");
    std::fs::write(&path, chain).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http01_issues_a_chain_that_openssl_verifies() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "http01") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &solvers_yaml(&pebble), "info");
    let issuer = add_issuer(&server, &pebble, "pebble", &strs(&http01_args(&pebble)));
    assert_eq!(issuer["kind"], "acme");
    assert!(issuer["account_url"].as_str().unwrap().starts_with("https://127.0.0.1"));
    let created = create(
        &server,
        &["www.example.com", "--san", "api.example.com", "--issuer", "pebble"],
    );
    assert_eq!(created["status"], "active", "{created}");
    let chain = chain_of(&server, created["id"].as_str().unwrap());
    assert_verifies(&pebble, &chain);
    let sans = sans_of(&chain);
    assert!(
        sans.contains("www.example.com") && sans.contains("api.example.com"),
        "{sans}"
    );
    // A server-generated key: the key endpoint hands it out and it matches the leaf.
    let key = server.cli_ok(&["cert", "get", created["id"].as_str().unwrap(), "--key"]);
    assert!(key.contains("PRIVATE KEY"));

    // The health check finds the account valid and says so in `issuer list`.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = serde_json::from_str(&server.cli_ok(&["issuer", "list", "--json"])).unwrap();
        let pebble_issuer = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "pebble")
            .unwrap()
            .clone();
        if pebble_issuer["health"]["status"] == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "issuer never reported healthy: {pebble_issuer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = scrape_metrics(&server);
    assert!(
        metrics.contains("certkeeper_issuer_healthy{issuer=\"pebble\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("certkeeper_acme_requests_total{endpoint=\"newOrder\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("certkeeper_acme_requests_total{endpoint=\"finalize\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("certkeeper_acme_orders_total{issuer=\"pebble\",outcome=\"valid\"} 1"),
        "{metrics}"
    );

    // A wildcard without dns-01 is refused up front, with the fix in the message.
    let out = server.cli(&["cert", "create", "*.example.com", "--issuer", "pebble"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dns-01"), "{stderr}");
}

/// GET with curl (a blocking call; the tests are synchronous).
/// `/metrics` with the admin token (which has the `metrics` scope).
fn scrape_metrics(server: &Server) -> String {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "-H", &format!("Authorization: Bearer {}", server.token())])
        .arg(format!("{}/metrics", server.url))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tls_alpn01_and_a_client_csr() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "tls_alpn01") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &solvers_yaml(&pebble), "warn");
    add_issuer(
        &server,
        &pebble,
        "pebble-alpn",
        &["--challenge", "tls-alpn-01", "--solver", "pebble-alpn"],
    );
    // The client keeps its key: an openssl CSR (RSA, with a must-staple extension).
    let key = dir.path().join("client.key");
    let csr = dir.path().join("client.csr");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=alpn.example.com",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:alpn.example.com",
            "-addext",
            "tlsfeature=status_request",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(status.status.success());
    let created = create(&server, &["--csr", csr.to_str().unwrap(), "--issuer", "pebble-alpn"]);
    let chain = chain_of(&server, created["id"].as_str().unwrap());
    assert_verifies(&pebble, &chain);
    // The leaf certifies the client's key.
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &chain).unwrap();
    let pubkey = |args: &[&str], path: &PathBuf| {
        std::process::Command::new("openssl")
            .args(args)
            .arg(path)
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], &leaf),
        pubkey(&["pkey", "-pubout", "-in"], &key)
    );
}

/// dns-01 through RFC 2136 against a real BIND: apex and wildcard in one order, and the TXT
/// records are gone afterwards.
#[test]
fn dns01_rfc2136_apex_and_wildcard_in_one_order() {
    let Some(bind) = Bind::start(&["example.test"]) else {
        return;
    };
    let options = PebbleOptions {
        dns: PebbleDns::Server(bind.addr()),
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "dns01_rfc2136") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The provider (with its key file) is the operator's: defined in the config file, named by
    // the issuer added through the API.
    let dns_yaml = format!(
        "dns_providers:\n  bind:\n    kind: rfc2136\n    server: \"{}\"\n    tsig_key_name: {}\n    \
         tsig_algorithm: hmac-sha256\n    tsig_secret_file: {}\n    propagation_timeout_seconds: 20\n    \
         propagation_interval_ms: 100\n",
        bind.addr(),
        bind.tsig_key_name(),
        bind.key_file().display()
    );
    let server = start_server(dir.path(), &dns_yaml, "info");
    add_issuer(
        &server,
        &pebble,
        "pebble-dns",
        &["--challenge", "dns-01", "--dns-provider", "bind"],
    );
    let created = create(
        &server,
        &["example.test", "--san", "*.example.test", "--issuer", "pebble-dns"],
    );
    let chain = chain_of(&server, created["id"].as_str().unwrap());
    assert_verifies(&pebble, &chain);
    let sans = sans_of(&chain);
    assert!(
        sans.contains("DNS:example.test") && sans.contains("DNS:*.example.test"),
        "{sans}"
    );
    assert!(
        bind.txt("_acme-challenge.example.test.").is_empty(),
        "TXT records left behind"
    );
    assert!(
        !server.log_text().contains(bind.tsig_secret()),
        "the TSIG secret was logged"
    );
    // Two TXT records (apex and wildcard) waited for: two propagation samples.
    let metrics = scrape_metrics(&server);
    assert!(
        metrics.contains("certkeeper_dns_propagation_seconds_count 2"),
        "{metrics}"
    );
}

/// Writes an exec hook that forwards to challtestsrv, appending its calls to `calls`.
/// `value_override` makes it publish a wrong value (a broken DNS setup).
fn write_hook(path: &Path, mgmt: &str, calls: &Path, value_override: Option<&str>) {
    let value = value_override.map_or_else(|| "$3".to_owned(), str::to_owned);
    let script = format!(
        "#!/bin/sh\nset -eu\necho \"$1 $2\" >> {calls}\ncase \"$1\" in\n  present) curl -fsS -X POST -d \
         \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"{value}\\\"}}\" {mgmt}/set-txt ;;\n  cleanup) curl -fsS -X POST \
         -d \"{{\\\"host\\\":\\\"$2\\\"}}\" {mgmt}/clear-txt ;;\nesac\n",
        calls = calls.display()
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The config file's exec provider `hook` running `hook`, checked against challtestsrv.
fn exec_yaml(pebble: &Pebble, hook: &Path) -> String {
    format!(
        "dns_providers:\n  hook:\n    kind: exec\n    command: {}\n    timeout: 10\n    resolvers: [\"{}\"]\n    \
         propagation_timeout_seconds: 3\n    propagation_interval_ms: 100\n",
        hook.display(),
        pebble.challtestsrv().unwrap().dns_addr()
    )
}

/// Adds issuer `pebble-exec`, naming the config file's provider `hook` ([`exec_yaml`]).
fn exec_issuer(server: &Server, pebble: &Pebble) {
    add_issuer(
        server,
        pebble,
        "pebble-exec",
        &["--challenge", "dns-01", "--dns-provider", "hook"],
    );
}

#[test]
fn dns01_exec_hook() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "dns01_exec") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook.sh");
    let calls = dir.path().join("calls.log");
    write_hook(&hook, &pebble.challtestsrv().unwrap().mgmt_url(), &calls, None);
    let server = start_server(dir.path(), &exec_yaml(&pebble, &hook), "warn");
    exec_issuer(&server, &pebble);
    let created = create(
        &server,
        &[
            "exec.example.com",
            "--san",
            "*.exec.example.com",
            "--issuer",
            "pebble-exec",
        ],
    );
    assert_verifies(&pebble, &chain_of(&server, created["id"].as_str().unwrap()));
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        calls.matches("present _acme-challenge.exec.example.com.").count(),
        2,
        "{calls}"
    );
    assert_eq!(
        calls.matches("cleanup _acme-challenge.exec.example.com.").count(),
        2,
        "{calls}"
    );
}

/// SERVFAIL, then a wrong TXT value: each order fails with a clear error, the record is cleaned
/// up, the job backs off, and once DNS is fixed a retry succeeds on its own.
#[test]
fn dns_faults_fail_clearly_clean_up_and_recover() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "dns_faults") else {
        return;
    };
    let challtestsrv = pebble.challtestsrv().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook.sh");
    let calls = dir.path().join("calls.log");
    write_hook(&hook, &challtestsrv.mgmt_url(), &calls, None);
    let server = start_server(dir.path(), &exec_yaml(&pebble, &hook), "warn");
    exec_issuer(&server, &pebble);
    let client = server.client();
    let rt = tokio::runtime::Runtime::new().unwrap();

    for fault in ["servfail", "wrong-value"] {
        let name = format!("{fault}.example.com");
        let host = format!("_acme-challenge.{name}.");
        match fault {
            "servfail" => challtestsrv.set_servfail(&host),
            _ => write_hook(&hook, &challtestsrv.mgmt_url(), &calls, Some("not-the-right-value")),
        }
        let request = ck_api_types::CreateCertificate {
            common_name: Some(name.clone()),
            issuer: Some("pebble-exec".into()),
            ..Default::default()
        };
        let created = rt.block_on(client.create_certificate(&request, None)).unwrap();
        // Wait for a failed attempt with a clear message.
        let deadline = Instant::now() + Duration::from_secs(60);
        let failed = loop {
            let job = rt.block_on(client.job(&created.job.id)).unwrap();
            if job.last_error.is_some() {
                break job;
            }
            assert!(Instant::now() < deadline, "no failed attempt for {name}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let error = failed.last_error.clone().unwrap();
        let expected = if fault == "servfail" {
            "SERVFAIL"
        } else {
            "not-the-right-value"
        };
        assert!(error.contains(&name) && error.contains(expected), "{fault}: {error}");
        assert_eq!(failed.state, "pending", "a DNS failure is retried: {failed:?}");
        assert!(
            failed.run_after > failed.updated_at - time::Duration::seconds(1),
            "backs off"
        );
        // Cleaned up: the hook was told to remove the record.
        let log = std::fs::read_to_string(&calls).unwrap();
        assert!(log.contains(&format!("cleanup {host}")), "{fault}: no cleanup in {log}");

        // Fix DNS: the next retry succeeds without anyone asking.
        match fault {
            "servfail" => challtestsrv.clear_servfail(&host),
            _ => write_hook(&hook, &challtestsrv.mgmt_url(), &calls, None),
        }
        let job = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let job = client.job(&created.job.id).await.unwrap();
                if job.state == "succeeded" || Instant::now() > deadline {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        assert_eq!(
            job.state,
            "succeeded",
            "{fault}: never recovered: {job:?}\n{}",
            server.log_text()
        );
        assert_verifies(&pebble, &chain_of(&server, &created.certificate.id));
    }
}

#[test]
fn eab_is_required_refused_without_and_accepted_with() {
    let options = PebbleOptions {
        eab: true,
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "eab") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &solvers_yaml(&pebble), "debug");
    let http = http01_args(&pebble);
    let directory = pebble.directory_url();
    let tls_ca = pebble.tls_ca_pem_path().to_str().unwrap().to_owned();
    let base = [
        "issuer",
        "add",
        "acme",
        "no-eab",
        "--directory",
        &directory,
        "--ca-bundle",
        &tls_ca,
    ];
    let out = server.cli(&[&base[..], &strs(&http)[..]].concat());
    assert!(!out.status.success(), "an account without EAB must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("externalAccountRequired"), "{stderr}");
    assert!(server.cli_ok(&["issuer", "list", "--json"]).contains("\"local\""));
    assert!(
        !server.cli_ok(&["issuer", "list", "--json"]).contains("no-eab"),
        "nothing stored"
    );

    let (kid, hmac) = EAB_KEYS[0];
    let hmac_file = dir.path().join("eab.hmac");
    std::fs::write(&hmac_file, hmac).unwrap();
    let mut extra = vec!["--eab-kid", kid, "--eab-hmac-file", hmac_file.to_str().unwrap()];
    extra.extend(strs(&http));
    let issuer = add_issuer(&server, &pebble, "with-eab", &extra);
    assert_eq!(issuer["settings"]["eab"]["hmac"], "[redacted]");
    let created = create(&server, &["eab.example.com", "--issuer", "with-eab"]);
    assert_verifies(&pebble, &chain_of(&server, created["id"].as_str().unwrap()));

    // Secrets never show: not in the log (debug level), not in any API answer.
    let shown = [
        server.log_text(),
        server.cli_ok(&["issuer", "list", "--json"]),
        server.cli_ok(&["issuer", "show", "with-eab", "--json"]),
        server.cli_ok(&["job", "list", "--json"]),
        stderr.into_owned(),
    ]
    .concat();
    assert!(!shown.contains(hmac), "the EAB MAC key leaked");
    let account_key = account_key_of(&server, "with-eab");
    assert!(!shown.contains(&account_key), "the account key leaked");
}

/// The stored account key (base64url PKCS#8): the column holds only ciphertext, so it is read
/// through the store with the data directory's key-encryption key.
fn account_key_of(server: &Server, issuer: &str) -> String {
    let db = server.data_dir.join("certkeeper.db");
    let kek = ck_secrets::read_kek_file(&server.data_dir.join("kek")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async {
        let store = ck_store::Store::connect(
            &ck_store::DatabaseUrl::sqlite_file(&db),
            ck_secrets::SecretCipher::new(kek),
        )
        .await
        .unwrap();
        store
            .issuer(issuer)
            .await
            .unwrap()
            .unwrap()
            .account_credentials
            .unwrap()
    });
    let credentials: Value = serde_json::from_str(text.trim()).unwrap();
    credentials["key_pkcs8"].as_str().unwrap().to_owned()
}

#[test]
fn revocation_reaches_the_ca_and_key_rollover_keeps_the_account() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "revocation") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &solvers_yaml(&pebble), "warn");
    add_issuer(&server, &pebble, "pebble", &strs(&http01_args(&pebble)));
    let created = create(&server, &["revoke.example.com", "--issuer", "pebble"]);
    let id = created["id"].as_str().unwrap();
    let serial = created["serial"].as_str().unwrap().to_owned();
    assert_eq!(pebble.cert_status(&serial).0, "Valid");
    // A renewal leaves the first version valid at the CA; revoking the certificate revokes both.
    server.cli_ok(&["cert", "renew", id, "--wait", "--timeout", "120"]);
    let renewed: Value = serde_json::from_str(&server.cli_ok(&["cert", "get", id, "--json"])).unwrap();
    let renewed_serial = renewed["serial"].as_str().unwrap().to_owned();
    assert_ne!(renewed_serial, serial);
    let revoked: Value =
        serde_json::from_str(&server.cli_ok(&["cert", "revoke", id, "--reason", "keyCompromise", "--json"])).unwrap();
    assert_eq!(revoked["status"], "revoked");
    for serial in [&serial, &renewed_serial] {
        assert_eq!(pebble.cert_status(serial), ("Revoked".to_owned(), Some(1)), "{serial}");
    }

    // Key rollover: same account URL, new key; the next order works with the new key.
    let before = account_key_of(&server, "pebble");
    let rolled: Value = serde_json::from_str(&server.cli_ok(&["issuer", "rollover-key", "pebble", "--json"])).unwrap();
    assert_eq!(rolled["account_url"], created_issuer_account(&server));
    assert_ne!(account_key_of(&server, "pebble"), before);
    let again = create(&server, &["after-rollover.example.com", "--issuer", "pebble"]);
    assert_verifies(&pebble, &chain_of(&server, again["id"].as_str().unwrap()));

    // Deactivation needs --yes, then the account is gone at the CA.
    assert!(!server.cli(&["issuer", "deactivate-account", "pebble"]).status.success());
    let deactivated: Value =
        serde_json::from_str(&server.cli_ok(&["issuer", "deactivate-account", "pebble", "--yes", "--json"])).unwrap();
    assert!(deactivated.get("account_url").is_none(), "{deactivated}");
}

fn created_issuer_account(server: &Server) -> Value {
    let shown: Value = serde_json::from_str(&server.cli_ok(&["issuer", "show", "pebble", "--json"])).unwrap();
    shown["account_url"].clone()
}

/// Pebble rejects half of all nonces: 20 concurrent orders still all succeed.
#[test]
fn half_the_nonces_rejected_twenty_orders_succeed() {
    let options = PebbleOptions {
        nonce_reject_percent: 50,
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "bad_nonce") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &solvers_yaml(&pebble), "warn");
    add_issuer(&server, &pebble, "pebble", &strs(&http01_args(&pebble)));
    let client = server.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let request = ck_api_types::CreateCertificate {
                    common_name: Some(format!("nonce-{i}.example.com")),
                    issuer: Some("pebble".into()),
                    ..Default::default()
                };
                client
                    .create_certificate(&request, Some(Duration::from_secs(120)))
                    .await
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        out
    });
    for answer in &results {
        // The server's warnings say why an order failed, if one did.
        let log = server.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        assert_eq!(answer.job.state, "succeeded", "{:?}\nserver log:\n{tail}", answer.job);
        assert_eq!(
            answer.job.attempts, 1,
            "badNonce is retried inside the attempt: {:?}",
            answer.job
        );
    }
    assert_verifies(&pebble, &chain_of(&server, &results[0].certificate.id));
}

/// Short-lived certificates renew on their own, across a server restart.
#[test]
fn short_lived_certificates_renew_on_time_across_a_restart() {
    let options = PebbleOptions {
        validity_seconds: Some(40),
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "renewal") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The issuer comes from the config file (YAML accepts JSON): its account is registered on
    // first use and survives the restart.
    let issuer = serde_json::json!({
        "pebble": {
            "directory": pebble.directory_url(),
            "ca_bundle_pem": pebble.tls_ca_pem(),
            "http01": { "listen": format!("127.0.0.1:{}", pebble.http_port()) },
        }
    });
    let yaml = format!("certificates:\n  renew_at_fraction: 0.3\n  renew_jitter: 0.0\nacme_issuers: {issuer}\n");
    let mut server = start_server(dir.path(), &yaml, "info");
    let created = create(&server, &["renew.example.com", "--issuer", "pebble"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["current_version"], 1);
    // Restart (hard) while the certificate waits for its renewal time.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let cert: Value = serde_json::from_str(&server.cli_ok(&["cert", "get", &id, "--json"])).unwrap();
        if cert["current_version"].as_u64().unwrap_or(0) >= 2 {
            break cert;
        }
        assert!(Instant::now() < deadline, "not renewed: {cert}\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_ne!(renewed["serial"], created["serial"]);
    let not_after = |v: &Value| {
        time::OffsetDateTime::parse(
            v["not_after"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert!(not_after(&renewed) > not_after(&created), "a later expiry");
    assert!(
        time::OffsetDateTime::now_utc() < not_after(&created),
        "renewed before the old one expired"
    );
    assert_verifies(&pebble, &chain_of(&server, &id));
}

/// The CA offers two chains (Pebble's alternate roots): the preferred one is taken, and the
/// default stays the default without a preference.
#[test]
fn preferred_chain_picks_the_alternate() {
    let options = PebbleOptions {
        alternate_roots: 1,
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "preferred_chain") else {
        return;
    };
    let alternate_root = pebble.root_pem(1);
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "multiline", "-in"])
        .arg(&alternate_root)
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&out.stdout).into_owned();
    let cn = subject
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("commonName")
                .map(|v| v.trim().trim_start_matches('=').trim().to_owned())
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &solvers_yaml(&pebble), "warn");
    let http = http01_args(&pebble);
    let mut extra = strs(&http);
    extra.extend(["--preferred-chain", cn.as_str()]);
    add_issuer(&server, &pebble, "pebble-alt", &extra);
    add_issuer(&server, &pebble, "pebble-default", &strs(&http01_args(&pebble)));

    let preferred = create(&server, &["alt.example.com", "--issuer", "pebble-alt"]);
    let chain = chain_of(&server, preferred["id"].as_str().unwrap());
    openssl_verify_chain(&alternate_root, &chain).unwrap_or_else(|e| panic!("not the alternate chain: {e}"));
    assert!(openssl_verify_chain(pebble.issuer_root_pem_path(), &chain).is_err());

    let default = create(&server, &["default.example.com", "--issuer", "pebble-default"]);
    assert_verifies(&pebble, &chain_of(&server, default["id"].as_str().unwrap()));
}

/// The Cloudflare token and an inline TSIG secret (with the EAB key and the account key, see
/// the EAB test) never show in the log (debug level), API answers, job errors or problems —
/// also when the provider fails.
#[test]
fn dns_provider_secrets_never_leak() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "secrets") else {
        return;
    };
    let resolver = pebble.challtestsrv().unwrap().dns_addr();
    let closed = ck_test_peers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = "cf-token-Zq8v1S3CRET";
    let tsig = "dHNpZy1zZWNyZXQtdmFsdWUtMTIzNDU2Nzg5MA==";
    let dns_yaml = format!(
        "dns_providers:\n  cf:\n    kind: cloudflare\n    api_token: {token}\n    \
         api_base: http://127.0.0.1:{closed}/client/v4\n    resolvers: [\"{resolver}\"]\n    \
         propagation_timeout_seconds: 1\n  tsig:\n    kind: rfc2136\n    server: \"{resolver}\"\n    \
         zone: example.com\n    tsig_key_name: k\n    tsig_algorithm: hmac-sha256\n    tsig_secret: \"{tsig}\"\n    \
         resolvers: [\"{resolver}\"]\n    propagation_timeout_seconds: 1\n"
    );
    let server = start_server(dir.path(), &dns_yaml, "debug");
    let mut shown = String::new();
    for id in ["cf", "tsig"] {
        add_issuer(&server, &pebble, id, &["--challenge", "dns-01", "--dns-provider", id]);
        let created: Value = serde_json::from_str(&server.cli_ok(&[
            "cert",
            "create",
            &format!("{id}.example.com"),
            "--issuer",
            id,
            "--json",
        ]))
        .unwrap();
        let job_id = created["job"]["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        let job = loop {
            let job = server.cli_ok(&["job", "get", &job_id]);
            if job.contains("dns-01 for") {
                break job;
            }
            assert!(
                Instant::now() < deadline,
                "no failed attempt: {job}\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        shown.push_str(&job);
        shown.push_str(&server.cli_ok(&["issuer", "show", id, "--json"]));
    }
    shown.push_str(&server.cli_ok(&["job", "list", "--json"]));
    shown.push_str(&server.cli_ok(&["issuer", "list", "--json"]));
    shown.push_str(&server.log_text());
    assert!(!shown.contains(token), "the Cloudflare token leaked");
    assert!(!shown.contains(tsig), "the TSIG secret leaked");
    assert!(
        !shown.contains(&account_key_of(&server, "cf")),
        "the account key leaked"
    );
}

/// Behind a proxy: the tokens are served on the API port, and no listener of our own runs.
#[test]
fn http01_via_the_api_port() {
    let api_port = ck_test_peers::free_port();
    let options = PebbleOptions {
        http_port: Some(api_port),
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "http01_via_api") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{api_port}");
    let server = start_server_with(dir.path(), "", "warn", &["--listen", &listen]);
    add_issuer(
        &server,
        &pebble,
        "behind-proxy",
        &["--challenge", "http-01", "--http01-via-api"],
    );
    let created = create(&server, &["proxied.example.com", "--issuer", "behind-proxy"]);
    assert_verifies(&pebble, &chain_of(&server, created["id"].as_str().unwrap()));
    // Unknown tokens are a plain 404, without authentication.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/.well-known/acme-challenge/nope", server.url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

/// The CA cannot reach our http-01 answer (we listen on the wrong port): the attempt fails, and
/// the CA's problem document, with the identifier, is on the job for the API and the CLI.
#[test]
fn invalid_challenge_keeps_the_cas_problem_document() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "invalid_challenge") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("127.0.0.1:{}", ck_test_peers::free_port());
    let server = start_server(
        dir.path(),
        &format!("acme_solvers:\n  wrong-port:\n    http01: {{listen: \"{wrong}\"}}\n"),
        "warn",
    );
    add_issuer(
        &server,
        &pebble,
        "pebble",
        &["--challenge", "http-01", "--solver", "wrong-port"],
    );
    let out = server.cli(&[
        "cert",
        "create",
        "unreachable.example.com",
        "--issuer",
        "pebble",
        "--json",
    ]);
    assert!(out.status.success());
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job: Value = serde_json::from_str(&server.cli_ok(&["job", "get", &job_id])).unwrap();
        if job.get("problem").is_some() {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "no problem document: {job}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let problem = &job["problem"];
    assert!(
        job["last_error"].as_str().unwrap().contains("validation failed"),
        "{job}"
    );
    assert_eq!(
        problem["subproblems"][0]["identifier"], "unreachable.example.com",
        "{job}"
    );
    assert!(
        problem["subproblems"][0]["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:ietf:params:acme:error:"),
        "{job}"
    );
    assert!(problem["subproblems"][0]["detail"].as_str().is_some(), "{job}");
    // The CLI's wait names the CA's problem type too.
    let waited = server.cli(&[
        "cert",
        "renew",
        created["id"].as_str().unwrap(),
        "--wait",
        "--timeout",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(stderr.contains("urn:ietf:params:acme:error:"), "{stderr}");
}

/// Secret canaries: an EAB MAC key, a TSIG secret, a Cloudflare token, the admin token, an
/// ACME account key and a server-made private key go through a whole lifecycle with debug
/// logging (issuers added, dns-01 orders through BIND, a failing DNS provider, renewal,
/// revocation, export, a KEK rotation with a restart). Then every log line, every API answer
/// (errors included), the audit trail and the raw database files are searched: no canary is
/// found anywhere, except the one answer that exports the key on purpose.
#[test]
fn secret_canaries_never_leak() {
    let Some(bind) = Bind::start(&["canary.test"]) else {
        return;
    };
    let options = PebbleOptions {
        dns: PebbleDns::Server(bind.addr()),
        eab: true,
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "canaries") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let eab_hmac = EAB_KEYS[0].1;
    let tsig = bind.tsig_secret().to_owned();
    let cloudflare = "cf-CANARY-token-93e1f5d7a2";
    let closed = ck_test_peers::free_port();
    std::fs::write(work.join("eab0.hmac"), eab_hmac).unwrap();
    std::fs::write(work.join("eab1.hmac"), EAB_KEYS[1].1).unwrap();
    let dns_yaml = format!(
        "dns_providers:\n  bind:\n    kind: rfc2136\n    server: \"{}\"\n    tsig_key_name: {}\n    \
         tsig_algorithm: hmac-sha256\n    tsig_secret: \"{tsig}\"\n    propagation_timeout_seconds: 20\n    \
         propagation_interval_ms: 100\n  cloudflare:\n    kind: cloudflare\n    api_token: {cloudflare}\n    \
         api_base: http://127.0.0.1:{closed}/client/v4\n    resolvers: [\"{}\"]\n    propagation_timeout_seconds: 1\n",
        bind.addr(),
        bind.tsig_key_name(),
        bind.addr()
    );
    let mut server = start_server(work, &dns_yaml, "debug");
    let admin_token = server.token();
    let mut shown = String::new();

    let dns_issuer = |server: &Server, id: &str, kid: &str, hmac: &str, provider: &str| {
        add_issuer(
            server,
            &pebble,
            id,
            &[
                "--eab-kid",
                kid,
                "--eab-hmac-file",
                work.join(hmac).to_str().unwrap(),
                "--challenge",
                "dns-01",
                "--dns-provider",
                provider,
            ],
        )
    };
    shown.push_str(&dns_issuer(&server, "bind", EAB_KEYS[0].0, "eab0.hmac", "bind").to_string());
    shown.push_str(&dns_issuer(&server, "cf", EAB_KEYS[1].0, "eab1.hmac", "cloudflare").to_string());

    // An ACME certificate through BIND, renewed; a local one with a server-made key.
    let acme = create(&server, &["www.canary.test", "--issuer", "bind"]);
    let acme_id = acme["id"].as_str().unwrap().to_owned();
    shown.push_str(&acme.to_string());
    shown.push_str(&server.cli_ok(&["cert", "renew", &acme_id, "--wait", "--json"]));
    let local = create(&server, &["keyed.internal"]);
    let local_id = local["id"].as_str().unwrap().to_owned();
    // The one answer that carries a key, on purpose: its base64 body is the private-key canary.
    let key_pem = server.cli_ok(&["cert", "get", &local_id, "--key"]);
    let private_key = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .max_by_key(|l| l.len())
        .unwrap()
        .to_owned();
    let account_key = account_key_of(&server, "bind");

    // A failing DNS provider: its error reaches the job, the API and the log.
    let failing = server.cli(&[
        "cert",
        "create",
        "fails.canary.test",
        "--issuer",
        "cf",
        "--wait",
        "--timeout",
        "15",
        "--json",
    ]);
    shown.push_str(&String::from_utf8_lossy(&failing.stdout));
    shown.push_str(&String::from_utf8_lossy(&failing.stderr));
    // Refused requests.
    for args in [
        vec!["cert", "create", "bad name!", "--json"],
        vec!["cert", "get", "00000000-0000-0000-0000-000000000000", "--json"],
        vec!["token", "create", "--name", "x", "--scope", "root"],
    ] {
        let out = server.cli(&args);
        shown.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    let wrong = std::process::Command::new(crate::support::BIN)
        .args(["cert", "list", "--data-dir"])
        .arg(&server.data_dir)
        .env("CERTKEEPER_TOKEN", "ck_0123456789abcdef_wrong")
        .output()
        .unwrap();
    shown.push_str(&String::from_utf8_lossy(&wrong.stderr));
    shown.push_str(&server.cli_ok(&["cert", "revoke", &acme_id, "--reason", "superseded", "--json"]));

    // KEK rotation: stop, rotate, start; everything still reads, the ACME account still works.
    server.kill9();
    let rotated = server.cli_ok(&["secrets", "rotate-kek", "--json"]);
    let rotated: Value = serde_json::from_str(&rotated).unwrap();
    assert!(rotated["rewrapped"].as_u64().unwrap() >= 6, "{rotated}");
    server.start_again();
    assert_eq!(
        server.cli_ok(&["cert", "get", &local_id, "--key"]),
        key_pem,
        "the key reads back after rotation"
    );
    let after = create(&server, &["after.canary.test", "--issuer", "bind"]);
    assert_verifies(&pebble, &chain_of(&server, after["id"].as_str().unwrap()));

    for args in [
        vec!["issuer", "list", "--json"],
        vec!["issuer", "show", "bind", "--json"],
        vec!["issuer", "show", "cf", "--json"],
        vec!["cert", "list", "--json"],
        vec!["job", "list", "--json"],
        vec!["token", "list", "--json"],
        vec!["audit", "--limit", "10000", "--json"],
        vec!["audit", "--csv", "--limit", "10000"],
    ] {
        shown.push_str(&server.cli_ok(&args));
    }
    assert!(shown.contains("[redacted]"), "the settings are shown, redacted");
    shown.push_str(&server.log_text());
    assert!(server.log_text().contains("DEBUG"), "debug logging was on");

    let canaries = [
        ("EAB MAC key", eab_hmac.to_owned()),
        ("TSIG secret", tsig),
        ("Cloudflare token", cloudflare.to_owned()),
        ("admin token", admin_token),
        ("ACME account key", account_key),
        ("server-made private key", private_key),
    ];
    let database: Vec<u8> = ["certkeeper.db", "certkeeper.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(server.data_dir.join(f)).ok())
        .flatten()
        .collect();
    // The control: public material is found by the same search, so the bytes are the real ones.
    let certificate_line = chain_of(&server, &local_id).lines().nth(1).unwrap().to_owned();
    assert!(
        database
            .windows(certificate_line.len())
            .any(|w| w == certificate_line.as_bytes())
    );
    let mut leaks = Vec::new();
    for (what, canary) in &canaries {
        assert!(canary.len() >= 20, "{what} canary too short to be meaningful");
        if shown.contains(canary.as_str()) {
            leaks.push(format!("{what} in logs or API answers"));
        }
        if database.windows(canary.len()).any(|w| w == canary.as_bytes()) {
            leaks.push(format!("{what} in the raw database"));
        }
    }
    assert!(leaks.is_empty(), "leaks: {leaks:?}");
    eprintln!(
        "canaries: {} values checked against {} bytes of logs and answers and {} bytes of database",
        canaries.len(),
        shown.len(),
        database.len()
    );
}
