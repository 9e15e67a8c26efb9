//! The README's flow: create through the CLI, fetch the chain, verify with openssl against the
//! CA from `/issuers/local/ca.pem`, revoke, renew.

use std::process::Command;

use crate::support::{Server, require_peer};

fn openssl_verify(dir: &std::path::Path, ca: &str, chain: &str) -> String {
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    let output = Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "chain.pem",
            "chain.pem",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn create_fetch_verify_revoke_renew() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);

    let created: serde_json::Value = serde_json::from_str(&server.cli_ok(&[
        "cert",
        "create",
        "app.internal",
        "--san",
        "api.internal",
        "--wait",
        "--json",
    ]))
    .unwrap();
    assert_eq!(created["status"], "active", "{created}");
    assert_eq!(created["job"]["state"], "succeeded");
    let id = created["id"].as_str().unwrap().to_owned();

    let chain = server.cli_ok(&["cert", "get", &id, "--pem"]);
    let ca = reqwest::blocking_get(&format!("{}/api/v1/issuers/local/ca.pem", server.url), &server.token());
    assert_eq!(openssl_verify(dir.path(), &ca, &chain).trim(), "chain.pem: OK");
    assert_eq!(server.cli_ok(&["issuer", "ca"]), ca, "the CLI prints the same CA");

    // Every extension the issue asks for, as openssl reads it.
    std::fs::write(dir.path().join("leaf.pem"), &chain).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-in", "leaf.pem", "-noout", "-text"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for needle in [
        "DNS:app.internal, DNS:api.internal",
        "TLS Web Server Authentication",
        "CA:FALSE",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(text.contains(needle), "leaf lacks {needle}:\n{text}");
    }

    // Server-generated key: fetchable, and it matches the certificate.
    let key = server.cli_ok(&["cert", "get", &id, "--key"]);
    assert!(key.contains("PRIVATE KEY"));
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let pubkey = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(
        pubkey(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", "key.pem", "-pubout"])
    );

    let listed: serde_json::Value = serde_json::from_str(&server.cli_ok(&["cert", "list", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(server.cli_ok(&["cert", "list"]).contains("app.internal"));

    let revoked: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "revoke", &id, "--reason", "keyCompromise", "--json"])).unwrap();
    assert_eq!(
        (revoked["status"].as_str(), revoked["revocation_reason"].as_str()),
        (Some("revoked"), Some("keyCompromise"))
    );

    let renewed: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "renew", &id, "--wait", "--json"])).unwrap();
    assert_eq!(renewed["status"], "active");
    assert_eq!(renewed["current_version"], 2);
    assert_ne!(renewed["serial"], created["serial"], "a renewal has a new serial");
    let versions: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "versions", &id, "--json"])).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let renewed_chain = server.cli_ok(&["cert", "get", &id, "--pem"]);
    assert_ne!(renewed_chain, chain);
    assert_eq!(openssl_verify(dir.path(), &ca, &renewed_chain).trim(), "chain.pem: OK");
}

#[test]
fn csr_mode_never_sees_the_key() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let status = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "k.pem",
            "-subj",
            "/CN=csr.internal",
            "-addext",
            "subjectAltName=DNS:csr.internal,IP:10.9.8.7",
            "-addext",
            "1.3.6.1.5.5.7.1.24=DER:30:03:02:01:05",
            "-out",
            "req.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let csr_path = dir.path().join("req.pem");
    let created: serde_json::Value = serde_json::from_str(&server.cli_ok(&[
        "cert",
        "create",
        "--csr",
        csr_path.to_str().unwrap(),
        "--wait",
        "--json",
    ]))
    .unwrap();
    assert_eq!(created["status"], "active", "{created}");
    assert_eq!(created["key_source"], "csr");
    assert_eq!(created["sans"], serde_json::json!(["csr.internal", "10.9.8.7"]));
    let id = created["id"].as_str().unwrap();
    let output = server.cli(&["cert", "get", id, "--key"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("never reached the server") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let chain = server.cli_ok(&["cert", "get", id, "--pem"]);
    let ca = server.cli_ok(&["issuer", "ca"]);
    assert_eq!(openssl_verify(dir.path(), &ca, &chain).trim(), "chain.pem: OK");
}

/// A tiny blocking GET with a bearer token, via a current-thread runtime.
mod reqwest {
    pub(crate) fn blocking_get(url: &str, token: &str) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = ::reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{url}: {}", response.status());
            response.text().await.unwrap()
        })
    }
}
