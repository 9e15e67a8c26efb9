//! Security findings: issuers (findings 2, 7 and 15).
//!
//! What runs a program, reads a server-side file or binds a socket is the operator's: only the
//! config file defines it, by name, and the API may only name it. Secrets in issuer settings
//! are hidden by their type wherever settings are shown. And a CA that was never reached is
//! never said to have refused anything.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ck_test_peers::pebble::{EAB_KEYS, Pebble, PebbleOptions};
use serde_json::{Value, json};

use crate::security::Http;
use crate::support::{BIN, Server, require_peer};

/// Starts a server with `yaml` as its config file.
fn start_with_config(dir: &Path, yaml: &str) -> Server {
    let config = dir.join("config.yaml");
    std::fs::write(&config, if yaml.is_empty() { "{}\n" } else { yaml }).unwrap();
    Server::start_logged(&dir.join("data"), &["--config", config.to_str().unwrap()], "info")
}

/// `POST /api/v1/issuers` with `acme`; the status, the content type and the answer.
async fn add_issuer(server: &Server, id: &str, acme: Value) -> (u16, String, String) {
    let response = Http::new(&server.url)
        .raw("POST", "/api/v1/issuers")
        .bearer_auth(server.token())
        .json(&json!({"id": id, "kind": "acme", "acme": acme}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.unwrap())
}

/// Asserts a 4xx problem+json refusal whose detail contains `expected`.
fn assert_refused(answer: &(u16, String, String), expected: &str, what: &str) {
    let (status, content_type, body) = answer;
    assert!((400..500).contains(status), "{what}: {status} {body}");
    assert_eq!(content_type, "application/problem+json", "{what}: {body}");
    assert!(body.contains(expected), "{what}: `{expected}` not in {body}");
}

/// A directory no one answers at: every refusal below must come before any network call.
const NOWHERE: &str = "https://127.0.0.1:9/dir";

/// Finding 2: `POST /api/v1/issuers` took a dns-01 `exec` provider with any `command` and `env`;
/// `/bin/bash` with `BASH_ENV=$(id > file)` ran as root when an order used the issuer. Now the
/// API may only name a provider the config file defines: the inline provider is refused before
/// anything is stored, and nothing runs.
#[tokio::test(flavor = "multi_thread")]
async fn api_cannot_define_exec_dns_provider() {
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let server = start_with_config(dir.path(), "");
    let attack = json!({
        "directory": NOWHERE,
        "challenge": "dns-01",
        "dns01": {
            "provider": "exec",
            "command": "/bin/bash",
            "env": {"BASH_ENV": format!("$(id > {})", pwned.display())},
        },
    });
    let answer = add_issuer(&server, "evil", attack).await;
    assert_refused(&answer, "dns_providers", "inline exec provider");
    // A name that the config file does not define is refused too.
    let unknown = add_issuer(
        &server,
        "evil",
        json!({"directory": NOWHERE, "challenge": "dns-01", "dns_provider": "/bin/bash"}),
    )
    .await;
    assert_refused(
        &unknown,
        "not defined in the server's config file",
        "unknown provider name",
    );

    let (_, issuers) = Http::new(&server.url)
        .call("GET", "/issuers", &server.token(), None)
        .await;
    assert!(
        !issuers.to_string().contains("evil"),
        "the issuer was stored: {issuers}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!pwned.exists(), "the exec provider ran");
}

/// Finding 2: the same endpoint took `tsig_secret_file`, `api_token_file` and CA bundles, so a
/// caller could make the server read its files and send them to a server of its choice. Every
/// such setting is refused; the file's content appears nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn api_cannot_make_server_read_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("server-secret");
    let canary = "c2VydmVyLWZpbGUtY2FuYXJ5LTQ4MTU=";
    std::fs::write(&secret_file, canary).unwrap();
    let secret_path = secret_file.to_str().unwrap();
    let server = start_with_config(dir.path(), "");
    let attempts = [
        (
            "tsig_secret_file",
            json!({"directory": NOWHERE, "challenge": "dns-01", "dns01": {"provider": "rfc2136",
                "server": "127.0.0.1:53", "tsig_key_name": "k", "tsig_algorithm": "hmac-sha256",
                "tsig_secret_file": secret_path}}),
            "dns_providers",
        ),
        (
            "api_token_file",
            json!({"directory": NOWHERE, "challenge": "dns-01", "dns01": {"provider": "cloudflare",
                "api_token_file": secret_path, "api_base": "https://127.0.0.1:9"}}),
            "dns_providers",
        ),
        (
            "ca_bundle path",
            json!({"directory": NOWHERE, "http01": {"via_api": true}, "ca_bundle": secret_path}),
            "not defined in the server's config file",
        ),
        (
            "ca_bundle_file",
            json!({"directory": NOWHERE, "http01": {"via_api": true}, "ca_bundle_file": secret_path}),
            "unknown field",
        ),
    ];
    for (what, acme, expected) in attempts {
        let answer = add_issuer(&server, "reader", acme).await;
        assert_refused(&answer, expected, what);
        assert!(!answer.2.contains(canary), "{what}: the file's content came back");
    }
    assert!(!server.log_text().contains(canary), "the file's content was logged");
}

/// Finding 2: listen addresses came from the API too, so a caller could bind ports (and an
/// http-01 issuer without one bound 0.0.0.0:80). Listeners are refused from the API, including
/// the implied one; the port stays free.
#[tokio::test(flavor = "multi_thread")]
async fn api_cannot_bind_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_config(dir.path(), "");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let address = format!("127.0.0.1:{port}");
    let attempts = [
        (
            "http01.listen",
            json!({"directory": NOWHERE, "http01": {"listen": address}}),
            "acme_solvers",
        ),
        (
            "tls_alpn01.listen",
            json!({"directory": NOWHERE, "challenge": "tls-alpn-01", "tls_alpn01": {"listen": address}}),
            "acme_solvers",
        ),
        (
            "implied port 80",
            json!({"directory": NOWHERE, "challenge": "http-01"}),
            "via_api",
        ),
        (
            "implied port 443",
            json!({"directory": NOWHERE, "challenge": "tls-alpn-01"}),
            "solver",
        ),
        (
            "unknown solver",
            json!({"directory": NOWHERE, "solver": address}),
            "not defined in the server's config file",
        ),
    ];
    for (what, acme, expected) in attempts {
        let answer = add_issuer(&server, "binder", acme).await;
        assert_refused(&answer, expected, what);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpListener::bind(&address).is_ok(),
        "something bound {address}"
    );
}

/// Runs `serve` with `yaml` as config and returns what it said if it refused to start.
fn serve_refuses(dir: &Path, yaml: &str) -> String {
    serve_refuses_in(dir, &dir.join("refused-data"), yaml)
}

/// [`serve_refuses`] on the data directory `data`.
fn serve_refuses_in(dir: &Path, data: &Path, yaml: &str) -> String {
    let config = dir.join("refused.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            assert!(!status.success());
            return String::from_utf8_lossy(&output.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with a refused config:\n{yaml}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 2: an exec provider's environment was passed as given (`BASH_ENV`, `LD_PRELOAD`,
/// `PATH` included) on top of the server's own. Even the config file may not set such names
/// now (the server refuses to start and names the variable), and the hook gets a cleared
/// environment: the allowlisted names and a fixed `PATH`, nothing of the server's.
#[tokio::test(flavor = "multi_thread")]
async fn exec_env_allowlist_refuses_bash_env_ld_path() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "BASH_ENV",
        "LD_PRELOAD",
        "PATH",
        "IFS",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "ENV",
    ] {
        let yaml = format!(
            "dns_providers:\n  hook:\n    kind: exec\n    command: /bin/true\n    env:\n      {name}: \"$(id)\"\n"
        );
        let said = serve_refuses(dir.path(), &yaml);
        assert!(said.contains(name) && said.contains("may not be set"), "{name}: {said}");
    }

    // What a hook really gets, through a real order (Pebble and its DNS server).
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "exec_env_allowlist") else {
        return;
    };
    let challtestsrv = pebble.challtestsrv().unwrap();
    let hook = dir.path().join("hook.sh");
    let seen = dir.path().join("env.txt");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -eu\nenv > {seen}\ncase \"$1\" in\n  present) curl -fsS -X POST -d \
             \"{{\\\"host\\\":\\\"$2\\\",\\\"value\\\":\\\"$3\\\"}}\" {mgmt}/set-txt ;;\n  cleanup) curl -fsS -X POST \
             -d \"{{\\\"host\\\":\\\"$2\\\"}}\" {mgmt}/clear-txt ;;\nesac\n",
            seen = seen.display(),
            mgmt = challtestsrv.mgmt_url()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let yaml = format!(
        "dns_providers:\n  hook:\n    kind: exec\n    command: {hook}\n    timeout: 10\n    env:\n      \
         HOOK_TOKEN: allowed-value\n    resolvers: [\"{dns}\"]\n    propagation_timeout_seconds: 5\n    \
         propagation_interval_ms: 100\nacme_issuers:\n  pebble-exec:\n    directory: {directory}\n    \
         ca_bundle_pem: {bundle:?}\n    challenge: dns-01\n    dns_provider: hook\n",
        hook = hook.display(),
        dns = challtestsrv.dns_addr(),
        directory = pebble.directory_url(),
        bundle = pebble.tls_ca_pem(),
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let data = dir.path().join("data");
    // The server runs with CERTKEEPER_LOG and the test's own HOME: neither may reach the hook.
    let server = Server::start_logged(&data, &["--config", config.to_str().unwrap()], "info");
    let out = server.cli(&[
        "cert",
        "create",
        "env.example.com",
        "--issuer",
        "pebble-exec",
        "--wait",
        "--timeout",
        "120",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains("HOOK_TOKEN=allowed-value"), "{env}");
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env}"
    );
    assert!(
        !env.contains("CERTKEEPER_LOG") && !env.contains("HOME="),
        "the server's environment leaked: {env}"
    );
}

/// Finding 2, upgrades: an issuer stored with an inline exec provider that the config file does
/// not declare (added through the API by an earlier version, or dropped from the file) is not
/// loaded: the server refuses to start, names the issuer and says how to keep it. Declared in
/// the file again, it loads.
#[test]
fn stored_issuer_with_inline_exec_is_not_loaded_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let declared = format!(
        "acme_issuers:\n  old-hook:\n    directory: {NOWHERE}\n    challenge: dns-01\n    dns01:\n      \
         provider: exec\n      command: /bin/true\n"
    );
    let mut server = start_with_config(dir.path(), &declared);
    server.stop();
    let said = serve_refuses_in(dir.path(), &dir.path().join("data"), "{}\n");
    assert!(
        said.contains("issuer 'old-hook'") && said.contains("acme_issuers.old-hook") && said.contains("dns01"),
        "{said}"
    );
    // The operator's fix: declare it in the config file.
    let again = start_with_config(dir.path(), &declared);
    let (status, _) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Http::new(&again.url).call("GET", "/issuers/old-hook", &again.token(), None));
    assert_eq!(status, 200);
}

/// Finding 7: `GET /api/v1/issuers/{id}` redacted a fixed list of field names, so the values
/// under an exec provider's `env` came back in clear, even to a restricted read token. Now
/// settings are shown through their types: a canary in every secret-capable field (EAB MAC
/// key, Cloudflare token, TSIG secret, exec environment values) appears in no answer, audit
/// record or log line.
#[tokio::test(flavor = "multi_thread")]
async fn issuer_secrets_redacted_by_type() {
    let Some(pebble) = Pebble::start(
        PebbleOptions {
            eab: true,
            ..PebbleOptions::default()
        },
        "secrets_by_type",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let tsig_canary = b64("tsig-canary-7f3a9c-secret-bytes!");
    let cf_canary = "cloudflare-canary-token-5d2e";
    let env_canary = "exec-env-canary-91b4";
    let env_canary_2 = "exec-env-canary-second-0c7d";
    // Pebble's EAB keys (one account each): real MAC keys, the canaries of the EAB field. The
    // config file issuer's key is never used (no order), so it is a made-up one.
    let (config_kid, config_hmac) = ("kid-config", "Y29uZmlnLWVhYi1jYW5hcnktbWFjLWtleS0wMDE");
    let yaml = format!(
        "dns_providers:\n  \
           hook:\n    kind: exec\n    command: /bin/true\n    env:\n      AWS_SECRET_ACCESS_KEY: {env_canary}\n  \
           cf:\n    kind: cloudflare\n    api_token: {cf_canary}\n    zone_id: abc123\n  \
           bind:\n    kind: rfc2136\n    server: \"127.0.0.1:53\"\n    tsig_key_name: k\n    \
           tsig_algorithm: hmac-sha256\n    tsig_secret: \"{tsig_canary}\"\n\
         acme_issuers:\n  \
           inline:\n    directory: {directory}\n    ca_bundle_pem: {bundle:?}\n    \
           eab: {{kid: {config_kid}, hmac: \"{config_hmac}\"}}\n    challenge: dns-01\n    \
           dns01:\n      provider: exec\n      command: /bin/true\n      env:\n        \
           TOKEN: {env_canary_2}\n  \
           named:\n    directory: {directory}\n    ca_bundle_pem: {bundle:?}\n    challenge: dns-01\n    \
           dns_provider: bind\n",
        directory = pebble.directory_url(),
        bundle = pebble.tls_ca_pem(),
    );
    let server = start_with_config(dir.path(), &yaml);
    let http = Http::new(&server.url);
    let admin = server.token();

    let mut shown = String::new();
    for (id, provider, (eab_kid, eab_hmac)) in [("api-cf", "cf", EAB_KEYS[0]), ("api-hook", "hook", EAB_KEYS[1])] {
        let created = add_issuer(
            &server,
            id,
            json!({
                "directory": pebble.directory_url(),
                "ca_bundle_pem": pebble.tls_ca_pem(),
                "eab": {"kid": eab_kid, "hmac": eab_hmac},
                "challenge": "dns-01",
                "dns_provider": provider,
            }),
        )
        .await;
        assert_eq!(created.0, 201, "{}", created.2);
        assert!(created.2.contains("[redacted]"), "{}", created.2);
        shown.push_str(&created.2);
    }
    let (_, reader) = http
        .call(
            "POST",
            "/tokens",
            &admin,
            Some(json!({"name": "reader", "scopes": ["read"], "labels": {"team": "a"}})),
        )
        .await;
    let reader = reader["token"].as_str().expect("a restricted read token").to_owned();
    for token in [&admin, &reader] {
        for path in [
            "/issuers",
            "/issuers/inline",
            "/issuers/named",
            "/issuers/api-cf",
            "/issuers/api-hook",
        ] {
            let (status, body) = http.call("GET", path, token, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            shown.push_str(&body.to_string());
        }
    }
    let (_, inline) = http.call("GET", "/issuers/inline", &reader, None).await;
    assert_eq!(inline["settings"]["eab"]["hmac"], "[redacted]", "{inline}");
    assert_eq!(
        inline["settings"]["dns01"]["env"]["TOKEN"], "[redacted]",
        "a value under env is redacted by its type: {inline}"
    );
    let (_, audit) = http.call("GET", "/audit", &admin, None).await;
    shown.push_str(&audit.to_string());
    shown.push_str(&server.log_text());
    for (what, canary) in [
        ("TSIG secret", tsig_canary.as_str()),
        ("Cloudflare token", cf_canary),
        ("exec env value (named provider)", env_canary),
        ("exec env value (inline provider)", env_canary_2),
        ("EAB MAC key (API, 1)", EAB_KEYS[0].1),
        ("EAB MAC key (API, 2)", EAB_KEYS[1].1),
        ("EAB MAC key (config file)", config_hmac),
    ] {
        assert!(!shown.contains(canary), "the {what} leaked");
    }
}

/// Finding 15: when the CA's TLS certificate was refused (a CA:TRUE certificate as server
/// certificate), `issuer add` said 502 "the CA refused the account: … client error (Connect)".
/// The CA was never reached: the message now says what failed (TLS, with the verifier's
/// reason; a refused connection) and never that the CA refused.
#[test]
fn acme_tls_failure_names_the_cause() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut tls_server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string(), "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = start_with_config(dir.path(), "");
    let add = |directory: &str| {
        let out = server.cli(&[
            "issuer",
            "add",
            "acme",
            "unreachable",
            "--directory",
            directory,
            "--ca-bundle",
            cert.to_str().unwrap(),
            "--http01-via-api",
        ]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tls = add(&format!("https://127.0.0.1:{port}/dir"));
    let _ = tls_server.kill();
    let _ = tls_server.wait();
    assert!(tls.contains("TLS") && tls.contains("CaUsedAsEndEntity"), "{tls}");
    assert!(
        !tls.contains("refused the account") && tls.contains("never reached"),
        "{tls}"
    );

    let refused = add(&format!("https://127.0.0.1:{port}/dir"));
    assert!(refused.contains("connection refused"), "{refused}");
    assert!(!refused.contains("refused the account"), "{refused}");
}
