//! Server + agent + real nginx and HAProxy: keys made on the agent, deployments verified with
//! `openssl s_client`, renewals without a refused connection, a broken validation rolled back,
//! a `kill -9` in the middle of a deployment, the server away for a while, and no private key
//! anywhere on the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ck_test_peers::webservers::{Haproxy, Nginx};
use ck_test_peers::{free_port, wait_until};
use serde_json::Value;

use crate::support::{BIN, Server, require_peer};

/// A running `certkeeper agent`.
struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    fn start(config: &Path, server: &str, token_file: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--server", server, "--config"])
            .arg(config)
            .arg("--token-file")
            .arg(token_file)
            .env("CERTKEEPER_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log: log.to_owned(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// SHA-256 of the leaf `openssl s_client` is served on `port` for `sni`, lowercase hex.
fn served_fingerprint(port: u16, sni: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {sni} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").arg("-c").arg(script).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().split_once('=')?.1.replace(':', "").to_ascii_lowercase();
    (hex.len() == 64).then_some(hex)
}

/// The public key of a PEM certificate or private key, as `openssl` prints it.
fn public_key(path: &Path, is_key: bool) -> String {
    let args: &[&str] = if is_key {
        &["pkey", "-pubout", "-in"]
    } else {
        &["x509", "-noout", "-pubkey", "-in"]
    };
    let out = Command::new("openssl").args(args).arg(path).output().unwrap();
    assert!(out.status.success(), "openssl {args:?} {}", path.display());
    String::from_utf8(out.stdout).unwrap()
}

/// Opens a new TLS connection and makes a request every few milliseconds until stopped,
/// counting the ones that fail: a deployment must not refuse a single one.
struct ConnectionProbe {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ConnectionProbe {
    fn start(port: u16, sni: &str) -> Self {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, o, f, sni) = (stop.clone(), ok.clone(), failed.clone(), sni.to_owned());
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            // Bounded: at most 3000 requests (about a minute).
            for _ in 0..3000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let out = Command::new("curl")
                    .args(["-sk", "--max-time", "5", "--resolve"])
                    .arg(format!("{sni}:{port}:127.0.0.1"))
                    .arg(format!("https://{sni}:{port}/"))
                    .output();
                match out {
                    Ok(out) if out.status.success() && out.stdout.starts_with(b"ok") => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        f.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{other:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            errors
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.thread.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A self-signed placeholder, as a fresh host has before its first deployment.
fn placeholder(cert: &Path, key: &Path) {
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=placeholder", "-days", "1", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn deploy_jobs(server: &Server, certificate_id: &str) -> Vec<Value> {
    let jobs = json(&server.cli_ok(&["job", "list", "--limit", "1000", "--json"]));
    let items = jobs.as_array().cloned().unwrap_or_default();
    items
        .into_iter()
        .filter(|j| j["kind"] == "deploy" && j["certificate_id"] == certificate_id)
        .collect()
}

fn current(server: &Server, id: &str) -> (u64, String) {
    let cert = json(&server.cli_ok(&["cert", "get", id, "--json"]));
    (
        cert["current_version"].as_u64().unwrap(),
        cert["fingerprint"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Byte strings that only a copy of this P-256 key contains: the private scalar (raw and hex)
/// and a part of its PEM text that encodes only the scalar (DER bytes 36..68 of PKCS#8; the rest
/// is shared structure or the public key, which certificates carry anyway).
fn key_secrets(key: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(key)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let scalar_hex: String = text
        .split("priv:")
        .nth(1)
        .and_then(|rest| rest.split("pub:").next())
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let scalar: Vec<u8> = (0..scalar_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&scalar_hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(scalar.len(), 32, "{}", key.display());
    let pem = std::fs::read_to_string(key).unwrap();
    // The first base64 line holds DER bytes 0..48; characters 48..64 are scalar bytes 36..48.
    let first_line = pem.lines().find(|l| !l.starts_with("-----")).unwrap();
    vec![scalar, scalar_hex.into_bytes(), first_line.as_bytes()[48..64].to_vec()]
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn agent_deploys_to_nginx_and_haproxy_renews_rolls_back_and_survives_crashes() {
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let (nginx_cert, nginx_key, haproxy_pem) = (root.join("web.crt"), root.join("web.key"), root.join("web.pem"));
    placeholder(&nginx_cert, &nginx_key);
    let placeholder_pem = std::fs::read_to_string(&nginx_cert).unwrap() + &std::fs::read_to_string(&nginx_key).unwrap();
    write_private(&haproxy_pem, &placeholder_pem);
    let Some(nginx) = Nginx::start(&nginx_cert, &nginx_key) else {
        return;
    };
    let Some(haproxy) = Haproxy::start(&haproxy_pem) else {
        return;
    };

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Server::start(&dir.path().join("data"), &["--listen", &listen]);
    let created = json(&server.cli_ok(&["agents", "add", "web-1", "--json"]));
    let token_file = dir.path().join("agent.token");
    write_private(&token_file, created["token"].as_str().unwrap());
    let cert = json(&server.cli_ok(&["cert", "create", "web.test", "--agent", "web-1", "--json"]));
    let id = cert["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (cert["key_source"].as_str(), cert["status"].as_str()),
        (Some("agent"), Some("pending"))
    );

    let state_dir = dir.path().join("agent-state");
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}
allowed_roots: [{root}]
poll_interval_seconds: 1
certificates:
  - name: web.test
    targets:
      - type: nginx
        name: nginx
        cert_path: {nginx_cert}
        key_path: {nginx_key}
        config: {nginx_conf}
        error_log: {nginx_log}
        verify: {{ address: '127.0.0.1:{nginx_port}', sni: web.test }}
      - type: haproxy
        name: haproxy
        pem_path: {haproxy_pem}
        runtime_api_socket: {socket}
        config: {haproxy_conf}
        verify: {{ address: '127.0.0.1:{haproxy_port}', sni: web.test }}
",
            state = state_dir.display(),
            root = root.display(),
            nginx_cert = nginx_cert.display(),
            nginx_key = nginx_key.display(),
            nginx_conf = nginx.config.display(),
            nginx_log = nginx.error_log.display(),
            nginx_port = nginx.port,
            haproxy_pem = haproxy_pem.display(),
            socket = haproxy.admin_socket.display(),
            haproxy_conf = haproxy.config.display(),
            haproxy_port = haproxy.port,
        ),
    )
    .unwrap();
    let agent_log = dir.path().join("agent.log");
    let server_url = format!("http://{listen}");
    let mut agent = AgentProcess::start(&config, &server_url, &token_file, &agent_log, &[]);
    let both_serve = |fingerprint: &str| {
        served_fingerprint(nginx.port, "web.test").as_deref() == Some(fingerprint)
            && served_fingerprint(haproxy.port, "web.test").as_deref() == Some(fingerprint)
    };

    // 1. First issuance: the agent's CSR, then nginx and HAProxy serve it.
    wait_until("version 1 issued from the agent's CSR", Duration::from_secs(30), || {
        current(&server, &id).0 == 1
    });
    let (_, v1) = current(&server, &id);
    wait_until("nginx and HAProxy serve version 1", Duration::from_secs(30), || {
        both_serve(&v1)
    });
    wait_until("the deployment is reported", Duration::from_secs(10), || {
        deploy_jobs(&server, &id).iter().any(|j| j["state"] == "succeeded")
    });
    let keys_dir = state_dir.join("keys").join(&id);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state_dir.join("keys")), 0o700);
        for key in files_under(&keys_dir) {
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&nginx_key), 0o600);
    }
    let nginx_master = nginx.master_pid();
    let haproxy_pid = haproxy.pid();

    // 2. A renewal: a fresh key, served by both without a single refused connection.
    let probe_nginx = ConnectionProbe::start(nginx.port, "web.test");
    let probe_haproxy = ConnectionProbe::start(haproxy.port, "web.test");
    std::thread::sleep(Duration::from_millis(300));
    server.cli_ok(&["cert", "renew", &id]);
    wait_until("version 2 issued", Duration::from_secs(30), || {
        current(&server, &id).0 == 2
    });
    let (_, v2) = current(&server, &id);
    wait_until("both serve version 2", Duration::from_secs(30), || both_serve(&v2));
    std::thread::sleep(Duration::from_millis(300));
    for (what, probe) in [("nginx", probe_nginx), ("haproxy", probe_haproxy)] {
        let (ok, failed, errors) = probe.finish();
        assert!(ok >= 5, "{what}: only {ok} requests went through");
        assert_eq!(
            failed,
            0,
            "{what}: {failed} of {} requests failed during the renewal: {errors:?}",
            ok + failed
        );
    }
    assert_eq!(nginx.master_pid(), nginx_master, "nginx reloaded, not restarted");
    assert_eq!(haproxy.pid(), haproxy_pid, "HAProxy took the certificate at run time");
    let versions = json(&server.cli_ok(&["cert", "versions", &id, "--json"]));
    let spki = |n: usize| {
        let pem = versions[n]["cert_pem"].as_str().unwrap();
        let path = dir.path().join(format!("v{n}.pem"));
        std::fs::write(&path, pem).unwrap();
        public_key(&path, false)
    };
    assert_ne!(spki(0), spki(1), "a renewal makes a fresh key");

    // 3. A broken nginx configuration: validation fails, the previous files come back, nginx
    //    keeps serving version 2, the job fails with nginx's own words; HAProxy takes version 3.
    let nginx_conf = std::fs::read_to_string(&nginx.config).unwrap();
    std::fs::write(&nginx.config, format!("{nginx_conf}\nthis_is_not_a_directive on;\n")).unwrap();
    server.cli_ok(&["cert", "renew", &id]);
    wait_until("version 3 issued", Duration::from_secs(30), || {
        current(&server, &id).0 == 3
    });
    let (_, v3) = current(&server, &id);
    wait_until("the failed deployment is reported", Duration::from_secs(30), || {
        deploy_jobs(&server, &id).iter().any(|j| j["state"] == "failed")
    });
    let failed = deploy_jobs(&server, &id)
        .into_iter()
        .find(|j| j["state"] == "failed")
        .unwrap();
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("target 'nginx'") && error.contains("this_is_not_a_directive") && error.contains("restored"),
        "{error}"
    );
    assert_eq!(
        served_fingerprint(nginx.port, "web.test"),
        Some(v2.clone()),
        "nginx still serves v2"
    );
    assert_eq!(served_fingerprint(haproxy.port, "web.test"), Some(v3.clone()));
    assert_eq!(
        public_key(&nginx_cert, false),
        public_key(&nginx_key, true),
        "restored as a pair"
    );
    std::fs::write(&nginx.config, &nginx_conf).unwrap();

    // 4. kill -9 in the middle of the nginx deployment (after its first rename), restart: the
    //    interrupted files are rolled back, then the deployment is redone: never a mixed pair.
    agent.kill9();
    let mut stalled = AgentProcess::start(
        &config,
        &server_url,
        &token_file,
        &dir.path().join("agent-stalled.log"),
        &[("CERTKEEPER_AGENT_TEST_STALL_AFTER_RENAMES", "1")],
    );
    wait_until("the agent stalls mid-deployment", Duration::from_secs(30), || {
        stalled.log_text().contains("stalled after 1 renames")
    });
    stalled.kill9();
    assert_ne!(
        public_key(&nginx_cert, false),
        public_key(&nginx_key, true),
        "the kill left a half-written target (what recovery must fix)"
    );
    let mut agent = AgentProcess::start(&config, &server_url, &token_file, &agent_log, &[]);
    wait_until("nginx serves version 3 after recovery", Duration::from_secs(30), || {
        served_fingerprint(nginx.port, "web.test").as_deref() == Some(v3.as_str())
    });
    assert_eq!(public_key(&nginx_cert, false), public_key(&nginx_key, true));
    assert!(agent.log_text().contains("rolled back"), "{}", agent.log_text());

    // 5. The server goes away: the agent backs off and keeps what is deployed; when the server
    //    is back, it catches up with a renewal.
    server.kill9();
    wait_until("the agent notices", Duration::from_secs(30), || {
        agent.log_text().matches("cycle failed").count() >= 3
    });
    assert!(both_serve(&v3), "what is deployed keeps being served");
    server.restart();
    server.cli_ok(&["cert", "renew", &id]);
    wait_until("version 4 issued after the outage", Duration::from_secs(60), || {
        current(&server, &id).0 == 4
    });
    let (_, v4) = current(&server, &id);
    wait_until("both serve version 4", Duration::from_secs(60), || both_serve(&v4));
    let log = agent.log_text();
    assert!(
        log.contains("retry_in_s=1") && log.contains("retry_in_s=2"),
        "backoff: {log}"
    );
    assert!(log.contains("the server answers again"), "{log}");

    // 6. No private key on the server: not in the database, not anywhere in its data directory.
    agent.kill9();
    let secrets: Vec<Vec<u8>> = files_under(&state_dir.join("keys"))
        .iter()
        .chain([&nginx_key])
        .flat_map(|key| key_secrets(key))
        .collect();
    assert!(secrets.len() >= 6, "keys found: {}", secrets.len() / 3);
    let refused = server.cli(&["cert", "get", &id, "--key"]);
    assert!(!refused.status.success(), "the server has no key to give");
    // The control: a server-made key is found by the same search.
    let control = json(&server.cli_ok(&["cert", "create", "control.test", "--wait", "--json"]));
    let control_key = dir.path().join("control.key");
    let key_pem = server.cli_ok(&["cert", "get", control["id"].as_str().unwrap(), "--key"]);
    std::fs::write(&control_key, key_pem).unwrap();
    let control_secrets = key_secrets(&control_key);
    drop(server);
    let found_in = |files: &[PathBuf], secret: &[u8]| {
        files
            .iter()
            .any(|file| std::fs::read(file).unwrap().windows(secret.len()).any(|w| w == secret))
    };
    let found_in_data_dir = |secret: &[u8]| found_in(&files_under(&dir.path().join("data")), secret);
    // The search finds key material where it is in clear…
    assert!(
        found_in(std::slice::from_ref(&control_key), &control_secrets[2]),
        "the search finds a key"
    );
    // …and the server's own keys are only ciphertext at rest.
    for secret in &control_secrets {
        assert!(!found_in_data_dir(secret), "a server-made key is stored in clear");
    }
    for secret in &secrets {
        assert!(
            !found_in_data_dir(secret),
            "key material of the agent found in the server's data directory"
        );
    }
}

/// Runs `certkeeper agent --once`; returns (success, stderr).
fn agent_once(config: &Path, server: &str, token_file: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["agent", "--once", "--server", server, "--config"])
        .arg(config)
        .arg("--token-file")
        .arg(token_file)
        .env("CERTKEEPER_LOG", "warn")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn agent_refuses_bad_configuration_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let created = json(&server.cli_ok(&["agents", "add", "web-2", "--json"]));
    let token_file = dir.path().join("agent.token");
    write_private(&token_file, created["token"].as_str().unwrap());
    let cert = json(&server.cli_ok(&["cert", "create", "app.test", "--agent", "web-2", "--json"]));
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let outside = dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let config = dir.path().join("agent.yaml");
    let write_config = |name: &str, target_extra: &str, cert_dir: &Path| {
        std::fs::write(
            &config,
            format!(
                "state_dir: {state}\nallowed_roots: [{root}]\ncertificates:\n  - name: {name}\n    targets:\n      \
                 - type: files\n        name: app\n        cert_path: {dir}/app.crt\n        key_path: {dir}/app.key\n{target_extra}",
                state = dir.path().join("state").display(),
                root = root.display(),
                dir = cert_dir.display(),
            ),
        )
        .unwrap();
    };
    let cases: [(&str, &str, &Path, &str); 4] = [
        ("app.test", "", &outside, "outside the allowed roots"),
        (
            "app.test",
            "        reload: [/nonexistent/reload-app]\n",
            &root,
            "program `/nonexistent/reload-app` not found",
        ),
        (
            "nope.test",
            "",
            &root,
            "certificate 'nope.test' in the agent configuration is not bound to this agent (bound: app.test)",
        ),
        ("app.test", "        colour: blue\n", &root, "unknown field `colour`"),
    ];
    for (name, extra, cert_dir, expected) in cases {
        write_config(name, extra, cert_dir);
        let (ok, stderr) = agent_once(&config, &server.url, &token_file);
        assert!(!ok, "{expected}: the agent must refuse");
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(expected),
            "{expected}: {stderr}"
        );
    }
    assert!(
        files_under(&root).is_empty() && files_under(&outside).is_empty(),
        "nothing written"
    );
    let (_, stderr) = agent_once(&dir.path().join("missing.yaml"), &server.url, &token_file);
    assert!(stderr.contains("missing.yaml: cannot read it"), "{stderr}");
    write_private(&token_file, "ck_not-a-token");
    write_config("app.test", "", &root);
    let (_, stderr) = agent_once(&config, &server.url, &token_file);
    assert!(stderr.contains("refused the agent's token"), "{stderr}");

    // A CSR for other names, or garbage, is refused with a clear answer and stored nowhere.
    let agent = ck_client::Client::new(&server.url, created["token"].as_str().unwrap()).unwrap();
    let other = ck_pki::ServerKey::generate(
        ck_domain::KeyType::EcdsaP256,
        &["other.test".parse::<ck_domain::SubjectAltName>().unwrap()],
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = cert["id"].as_str().unwrap();
    let refused = rt.block_on(agent.submit_csr(id, &other.csr_pem)).unwrap_err();
    assert_eq!(refused.status(), Some(400));
    assert!(
        refused.to_string().contains("make the CSR with exactly its names"),
        "{refused}"
    );
    let refused = rt.block_on(agent.submit_csr(id, "not a CSR")).unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    let stranger = rt
        .block_on(agent.agent_bundle("01a2072d-9d15-71a6-933f-d036b5667bff"))
        .unwrap_err();
    assert_eq!(stranger.status(), Some(404), "{stranger}");
    assert_eq!(current(&server, id).0, 0, "nothing issued");
}

#[test]
fn read_scope_agent_pulls_server_made_keys_like_acme_manager_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let created = json(&server.cli_ok(&["agents", "add", "legacy-1", "--scope", "read", "--json"]));
    assert_eq!(created["agent"]["scope"], "read");
    let token = created["token"].as_str().unwrap().to_owned();
    let token_file = dir.path().join("agent.token");
    write_private(&token_file, &token);
    let refused = server.cli(&[
        "cert",
        "create",
        "x.test",
        "--agent",
        "legacy-1",
        "--key-source",
        "agent",
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read-scope token and cannot make keys"));
    let cert = json(&server.cli_ok(&[
        "cert",
        "create",
        "app.test",
        "--agent",
        "legacy-1",
        "--label",
        "app=legacy",
        "--wait",
        "--json",
    ]));
    assert_eq!(
        (cert["key_source"].as_str(), cert["status"].as_str()),
        (Some("server"), Some("active"))
    );
    let id = cert["id"].as_str().unwrap();

    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {state}\nallowed_roots: [{root}]\ncertificates:\n  - selector: {{ app: legacy }}\n",
            state = dir.path().join("state").display(),
            root = root.display(),
        ) + &format!(
            "    targets:\n      - type: files\n        name: app\n        cert_path: {r}/app.crt\n        \
             key_path: {r}/app.key\n        fullchain_path: {r}/fullchain.pem\n",
            r = root.display()
        ),
    )
    .unwrap();
    let (ok, stderr) = agent_once(&config, &server.url, &token_file);
    assert!(ok, "{stderr}");
    let key = server.cli_ok(&["cert", "get", id, "--key"]);
    assert_eq!(std::fs::read_to_string(root.join("app.key")).unwrap(), key);
    let chain = server.cli_ok(&["cert", "get", id, "--pem"]);
    assert_eq!(std::fs::read_to_string(root.join("fullchain.pem")).unwrap(), chain);
    assert!(deploy_jobs(&server, id).iter().any(|j| j["state"] == "succeeded"));
    // Unchanged: a second run writes nothing and reports nothing.
    let (ok, stderr) = agent_once(&config, &server.url, &token_file);
    assert!(ok, "{stderr}");
    assert_eq!(deploy_jobs(&server, id).len(), 1);

    let agent = ck_client::Client::new(&server.url, &token).unwrap();
    let csr = ck_pki::ServerKey::generate(
        ck_domain::KeyType::EcdsaP256,
        &["app.test".parse::<ck_domain::SubjectAltName>().unwrap()],
    )
    .unwrap()
    .csr_pem;
    let refused = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(agent.submit_csr(id, &csr))
        .unwrap_err();
    assert_eq!(refused.status(), Some(403));
    assert!(refused.to_string().contains("read scope"), "{refused}");
}
