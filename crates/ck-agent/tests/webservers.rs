//! Deployments to a real nginx and a real HAProxy on 127.0.0.1: reload without restart, rollback
//! when `nginx -t` refuses, HAProxy's runtime API, and live verification of the served leaf.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use ck_agent::{Bundle, DeployError, SecretPem, deploy};
use ck_test_peers::webservers::{Haproxy, Nginx};
use common::{Pki, mode_of, s_client_fingerprint, target};

const NAME: &str = "www.example.test";

struct Dirs {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

fn dirs() -> Dirs {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("certs");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    Dirs {
        root: root.canonicalize().unwrap(),
        state,
        _dir: dir,
    }
}

#[test]
fn nginx_reload_rollback_and_verification() {
    let d = dirs();
    let pki = Pki::new();
    let (leaf1, leaf2, leaf3) = (pki.leaf(NAME), pki.leaf(NAME), pki.leaf(NAME));
    let roots = [d.root.clone()];
    let (cert, key) = (d.root.join("site.crt"), d.root.join("site.key"));
    let files_only = format!(
        "type: nginx\nname: web\ncert_path: {}\nkey_path: {}\n",
        cert.display(),
        key.display()
    );
    deploy(&target(&files_only), &leaf1, &roots, &d.state).unwrap();
    assert_eq!(mode_of(&key), 0o600);

    let Some(nginx) = Nginx::start(&cert, &key) else { return };
    assert_eq!(s_client_fingerprint(nginx.port, NAME), leaf1.fingerprint);
    let master = nginx.master_pid();

    // Default commands: `nginx -t -q -c CONF -e LOG` and `nginx -s reload -c CONF -e LOG`.
    let managed = target(&format!(
        "{files_only}config: {}\nerror_log: {}\nbinary: {}\nverify: {{ address: \"127.0.0.1:{}\", sni: {NAME} }}\n",
        nginx.config.display(),
        nginx.error_log.display(),
        nginx.binary.display(),
        nginx.port,
    ));
    let report = deploy(&managed, &leaf2, &roots, &d.state).unwrap();
    assert!(report.changed);
    assert_eq!(
        report.verified,
        Some(true),
        "the reload must be served within the verify timeout"
    );
    // Old workers may still accept a handshake or two while they wind down after the reload:
    // wait until every one of several handshakes in a row gets leaf 2, so a straggler cannot
    // answer the checks below.
    ck_test_peers::wait_until("nginx serving only leaf 2 to openssl", Duration::from_secs(10), || {
        (0..5).all(|_| s_client_fingerprint(nginx.port, NAME) == leaf2.fingerprint)
    });
    assert_eq!(nginx.master_pid(), master, "reloaded, not restarted");

    // A key that does not match the certificate: `nginx -t` refuses, the old files come back.
    let before = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let mismatched = Bundle::from_pem(
        leaf3.chain_pem.clone(),
        SecretPem::new(leaf1.key_pem.expose().to_string()),
    )
    .unwrap();
    let err = deploy(&managed, &mismatched, &roots, &d.state).unwrap_err();
    match &err {
        DeployError::ValidationFailed { stderr, .. } => {
            assert!(
                stderr.contains("key values mismatch"),
                "nginx's diagnosis expected: {stderr}"
            );
        }
        other => panic!("expected ValidationFailed, got {other}"),
    }
    assert_eq!(
        (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
        before,
        "byte-identical rollback"
    );
    assert_eq!(
        s_client_fingerprint(nginx.port, NAME),
        leaf2.fingerprint,
        "old certificate still served"
    );
    assert_eq!(nginx.master_pid(), master);

    // Same bundle again: nothing to do, no reload, still verified earlier.
    assert!(!deploy(&managed, &leaf2, &roots, &d.state).unwrap().changed);

    // Verification fails when the endpoint serves another certificate than the bundle's.
    let elsewhere = target(&format!(
        "type: files\nname: other\ncert_path: {r}/other.crt\nkey_path: {r}/other.key\n\
         verify: {{ address: \"127.0.0.1:{}\", sni: {NAME}, timeout_seconds: 1 }}\n",
        nginx.port,
        r = d.root.display()
    ));
    let err = deploy(&elsewhere, &leaf3, &roots, &d.state).unwrap_err();
    match &err {
        DeployError::VerifyFailed { expected, served } => {
            assert_eq!(expected, &leaf3.fingerprint);
            // Normally leaf 2; leaf 1 only if a wound-down worker from the reload still answered.
            assert!(served == &leaf2.fingerprint || served == &leaf1.fingerprint, "{served}");
        }
        other => panic!("expected VerifyFailed, got {other}"),
    }
    assert!(!nginx.error_log_text().is_empty());
}

#[test]
fn haproxy_runtime_api_swaps_without_reload() {
    let d = dirs();
    let pki = Pki::new();
    let (leaf1, leaf2) = (pki.leaf(NAME), pki.leaf(NAME));
    let roots = [d.root.clone()];
    let pem = d.root.join("site.pem");
    let files_only = format!("type: haproxy\nname: lb\npem_path: {}\n", pem.display());
    deploy(&target(&files_only), &leaf1, &roots, &d.state).unwrap();
    assert_eq!(mode_of(&pem), 0o600, "the combined PEM holds the key");

    let Some(haproxy) = Haproxy::start(&pem) else { return };
    assert_eq!(s_client_fingerprint(haproxy.port, NAME), leaf1.fingerprint);
    let pid = haproxy.pid();

    // Default validation `haproxy -c -q -f CFG`, then `set ssl cert` + `commit ssl cert`.
    let managed = target(&format!(
        "{files_only}runtime_api_socket: {}\nconfig: {}\nbinary: {}\n\
         verify: {{ address: \"127.0.0.1:{}\", sni: {NAME}, timeout_seconds: 2 }}\n",
        haproxy.admin_socket.display(),
        haproxy.config.display(),
        haproxy.binary.display(),
        haproxy.port,
    ));
    let report = deploy(&managed, &leaf2, &roots, &d.state).unwrap();
    assert_eq!(report.verified, Some(true));
    assert_eq!(s_client_fingerprint(haproxy.port, NAME), leaf2.fingerprint);
    assert_eq!(haproxy.pid(), pid, "no reload, no restart");
    // The runtime API is memory only: the file holds the new certificate too.
    let on_disk = std::fs::read_to_string(&pem).unwrap();
    assert!(on_disk.starts_with(&leaf2.leaf_pem().unwrap()));
    assert!(on_disk.contains("PRIVATE KEY"));
    let shown = haproxy.admin(&format!("show ssl cert {}", pem.display()));
    assert!(shown.contains("Status: Used"), "{shown}");
}
