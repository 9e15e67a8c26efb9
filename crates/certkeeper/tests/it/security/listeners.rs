//! Security findings: the listeners (finding 9, slowloris) and `/metrics` (finding 8).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Server, require_peer};

/// Half-open connections each test holds.
const HALF_OPEN: usize = 2_000;

/// The soft limit on open files, from /proc (the test and the server it starts each hold one
/// descriptor per connection).
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap_or(u64::MAX)
}

/// Raises this process's soft open-file limit to `needed` with prlimit (util-linux) when it is
/// lower; the server started afterwards inherits it.
fn ensure_open_files(needed: u64) {
    if open_file_limit() >= needed {
        return;
    }
    let pid = std::process::id().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={needed}:{needed}")])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()) && open_file_limit() >= needed,
        "the test needs {needed} open files: raise `ulimit -n` (or install util-linux for prlimit)"
    );
}

fn config_with(dir: &Path, yaml: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until every connection is closed by the server (EOF or reset), failing at `deadline`.
fn all_closed<S: Read>(connections: &mut [S], deadline: Instant, set_timeout: impl Fn(&S, Duration)) {
    for (i, connection) in connections.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        set_timeout(connection, left);
        let mut buf = [0u8; 512];
        loop {
            match connection.read(&mut buf) {
                Ok(0) => break,
                // A server may say why (a 408) before it closes.
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    panic!("connection {i} still open at the deadline")
                }
                Err(_) => break,
            }
        }
    }
}

/// The review's attack: connections that send half a request head and then nothing were still
/// open after 65 s, and enough of them exhaust the server. Now 2,000 such connections (and
/// some that send nothing at all) are closed after the header timeout (2 s here, from the
/// config file), while `/health` answers throughout.
#[test]
fn slowloris_half_open_http_connections_are_closed_after_the_header_timeout() {
    if !require_peer("curl", "curl") {
        return;
    }
    ensure_open_files(3 * HALF_OPEN as u64 + 1_024);
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "listener:\n  header_read_timeout_seconds: 2\n  idle_timeout_seconds: 30\n  max_connections: 4096\n",
    );
    let server = Server::start(&dir.path().join("data"), &["--config", &config]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut connections = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let mut stream = TcpStream::connect(&addr).unwrap();
        if i % 10 != 0 {
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .unwrap();
        }
        connections.push(stream);
    }
    let opened = started.elapsed();
    // The server answers meanwhile.
    let (ok, body) = curl(&["-sf", "-m", "2", &format!("{}/health", server.url)]);
    assert!(
        ok && body == "ok\n",
        "/health with {HALF_OPEN} half-open connections: {body}"
    );
    let probe = Instant::now();
    all_closed(&mut connections, started + opened + Duration::from_secs(8), |s, t| {
        s.set_read_timeout(Some(t)).unwrap();
    });
    eprintln!(
        "{HALF_OPEN} half-open connections opened in {opened:?}, all closed {:?} after the last",
        probe.elapsed() + (started.elapsed() - probe.elapsed() - opened)
    );
    let (ok, body) = curl(&["-sf", "-m", "2", &format!("{}/health", server.url)]);
    assert!(ok && body == "ok\n", "{body}");
}

/// The same on the HTTPS listener: connections that finish the TLS handshake and send half a
/// head, and connections that stop in the middle of the handshake (closed by the handshake
/// timeout), all go; `/health` answers over TLS throughout.
#[test]
fn slowloris_half_open_https_connections_are_closed_after_the_header_and_handshake_timeouts() {
    if !require_peer("curl", "curl") {
        return;
    }
    ensure_open_files(3 * HALF_OPEN as u64 + 1_024);
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        "tls:\n  auto_names: [127.0.0.1, localhost]\nlistener:\n  header_read_timeout_seconds: 2\n  \
         tls_handshake_timeout_seconds: 2\n  idle_timeout_seconds: 30\n",
    );
    let server = Server::start(&dir.path().join("data"), &["--config", &config]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let addr = server.url.trim_start_matches("https://").to_owned();
    let ca = dir.path().join("data/ca.pem");

    let mut roots = rustls::RootCertStore::empty();
    for cert in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let started = Instant::now();
    // Half the connections stop in the handshake (a partial ClientHello), half after it.
    let mut mid_handshake = Vec::new();
    let mut half_head = Vec::new();
    for i in 0..HALF_OPEN {
        let mut tcp = TcpStream::connect(&addr).unwrap();
        if i % 2 == 0 {
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            mid_handshake.push(tcp);
            continue;
        }
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(client_config.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        tls.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        tls.flush().unwrap();
        half_head.push(tls);
    }
    let opened = started.elapsed();
    let (ok, body) = curl(&[
        "-sf",
        "-m",
        "3",
        "--cacert",
        ca.to_str().unwrap(),
        &format!("{}/health", server.url),
    ]);
    assert!(ok && body == "ok\n", "/health over TLS meanwhile: {body}");
    let deadline = started + opened + Duration::from_secs(8);
    all_closed(&mut mid_handshake, deadline, |s, t| {
        s.set_read_timeout(Some(t)).unwrap()
    });
    all_closed(&mut half_head, deadline, |s, t| {
        s.sock.set_read_timeout(Some(t)).unwrap();
    });
    eprintln!(
        "{HALF_OPEN} half-open TLS connections opened in {opened:?}, all closed after {:?}",
        started.elapsed()
    );
}

fn scrape(url: &str, token: Option<&str>) -> (u16, String) {
    let mut args = vec![
        "-s".to_owned(),
        "-o".to_owned(),
        "-".to_owned(),
        "-w".to_owned(),
        "\n%{http_code}".to_owned(),
    ];
    if let Some(token) = token {
        args.push("-H".to_owned());
        args.push(format!("Authorization: Bearer {token}"));
    }
    args.push(format!("{url}/metrics"));
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The review scraped `/metrics` without credentials and read every certificate's id and name
/// and every token's name. Now it needs a token with the `metrics` scope: none, a bad one or
/// one with other scopes (even admin's everything-but-metrics) is refused.
#[test]
fn metrics_without_token_is_refused() {
    if !require_peer("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.cli_ok(&["cert", "create", "secret-project.internal", "--wait"]);
    let (status, body) = scrape(&server.url, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.contains("secret-project") && !body.contains("certkeeper_"),
        "{body}"
    );
    assert!(
        body.contains("metrics scope"),
        "the refusal says what is needed: {body}"
    );
    let (status, _) = scrape(&server.url, Some("ck_notatoken_x"));
    assert_eq!(status, 401);
    let reader = server
        .cli_ok(&[
            "token",
            "create",
            "--name",
            "reader",
            "--scope",
            "read,create,update,delete,admin,export-key",
        ])
        .trim()
        .to_owned();
    let reader = reader.lines().last().unwrap().trim().to_owned();
    let (status, body) = scrape(&server.url, Some(&reader));
    assert_eq!(status, 403, "{body}");
    let prometheus = server
        .cli_ok(&["token", "create", "--name", "prometheus", "--scope", "metrics"])
        .trim()
        .to_owned();
    let prometheus = prometheus.lines().last().unwrap().trim().to_owned();
    let (status, body) = scrape(&server.url, Some(&prometheus));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("certkeeper_certificates{"), "{body}");
    // The bootstrap admin token carries every operator scope, metrics included.
    let (status, _) = scrape(&server.url, Some(&server.token()));
    assert_eq!(status, 200);
}

/// Even for an allowed scraper, no series names a certificate or a token unless the operator
/// asks for it in the config file (`metrics.named_series`); the per-issuer earliest expiry
/// and renewal times carry the alerts instead.
#[test]
fn metrics_hide_certificate_names_by_default() {
    if !require_peer("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let created: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "create", "team-b-secret.internal", "--wait", "--json"]))
            .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    server.cli_ok(&[
        "token",
        "create",
        "--name",
        "team-b-deployer",
        "--scope",
        "read",
        "--expires",
        "30d",
    ]);
    let (status, body) = scrape(&server.url, Some(&server.token()));
    assert_eq!(status, 200, "{body}");
    for secret in ["team-b-secret", id.as_str(), "team-b-deployer"] {
        assert!(!body.contains(secret), "{secret} in the default metrics:\n{body}");
    }
    assert!(
        body.contains("certkeeper_certificates_earliest_expiry_timestamp_seconds{issuer=\"local\"}"),
        "{body}"
    );
    assert!(
        body.contains("certkeeper_tokens_earliest_expiry_timestamp_seconds "),
        "{body}"
    );

    // Asked for explicitly, the named series come back.
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), "metrics:\n  named_series: true\n");
    let server = Server::start(&dir.path().join("data"), &["--config", &config]);
    server.cli_ok(&["cert", "create", "named.internal", "--wait"]);
    let (status, body) = scrape(&server.url, Some(&server.token()));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("certkeeper_certificate_expiry_timestamp_seconds{") && body.contains("name=\"named.internal\""),
        "{body}"
    );
}
