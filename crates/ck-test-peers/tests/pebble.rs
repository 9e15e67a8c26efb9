//! The Pebble fixture against the real Pebble and pebble-challtestsrv: does it start, serve a
//! directory, hand out its hierarchy, drive challtestsrv's DNS, and honour EAB?

#![allow(clippy::unwrap_used)]

use std::process::Command;

use ck_test_peers::pebble::{Pebble, PebbleOptions, openssl_verify_chain};
use ck_test_peers::peer_or_skip;

#[test]
fn pebble_starts_with_defaults_and_challtestsrv_answers_txt() {
    let test = "pebble_starts_with_defaults_and_challtestsrv_answers_txt";
    let Some(dig) = peer_or_skip("dig", "bind9-dnsutils", test) else {
        return;
    };
    let Some(pebble) = Pebble::start(PebbleOptions::default(), test) else {
        return;
    };

    let directory = pebble.directory();
    for key in ["newAccount", "newNonce", "newOrder", "revokeCert", "keyChange"] {
        assert!(
            directory[key].as_str().unwrap().starts_with("https://127.0.0.1:"),
            "{key} in {directory}"
        );
    }
    assert_eq!(directory["meta"]["externalAccountRequired"], false, "{directory}");
    assert!(pebble.directory_url().ends_with("/dir"));
    assert!(pebble.tls_ca_pem().contains("BEGIN CERTIFICATE"));
    assert_ne!(pebble.http_port(), pebble.tls_port());

    // The intermediate must chain to the root: that is what issued leaves are checked against.
    let intermediate = std::fs::read_to_string(pebble.issuer_intermediate_pem_path()).unwrap();
    openssl_verify_chain(pebble.issuer_root_pem_path(), &intermediate).unwrap();
    // And the listener CA must not: the two trust anchors are different things.
    assert!(openssl_verify_chain(pebble.tls_ca_pem_path(), &intermediate).is_err());

    let srv = pebble.challtestsrv().expect("default options start a challtestsrv");
    let host = "_acme-challenge.fixture.example.test";
    let dig_txt = || {
        let out = Command::new(&dig)
            .args([
                "@127.0.0.1",
                "-p",
                &srv.dns_addr().port().to_string(),
                "TXT",
                host,
                "+short",
                "+time=2",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "dig: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(dig_txt(), "");
    srv.set_txt(host, "token-value-1");
    assert_eq!(dig_txt(), "\"token-value-1\"");
    srv.clear_txt(host);
    assert_eq!(dig_txt(), "");
    assert!(!srv.dns_request_history(host).as_array().unwrap().is_empty());
}

#[test]
fn pebble_with_eab_requires_external_accounts() {
    let test = "pebble_with_eab_requires_external_accounts";
    let options = PebbleOptions {
        eab: true,
        validity_seconds: Some(3600),
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, test) else {
        return;
    };
    let directory = pebble.directory();
    assert_eq!(
        directory["meta"]["externalAccountRequired"],
        true,
        "{directory}\n{}",
        pebble.log_text()
    );
    assert_eq!(Pebble::eab_credentials().0, "kid-1");
}

/// rustls/webpki (what certkeeper's ACME client uses) must accept Pebble's listener when only
/// the fixture's TLS CA is trusted: a self-signed CA certificate there fails `CaUsedAsEndEntity`.
#[tokio::test]
async fn rustls_trusts_the_listener_through_the_fixture_ca_only() {
    let test = "rustls_trusts_the_listener_through_the_fixture_ca_only";
    let Some(pebble) = Pebble::start(PebbleOptions::default(), test) else {
        return;
    };
    let ca = reqwest::Certificate::from_pem(pebble.tls_ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let directory: serde_json::Value = client
        .get(pebble.directory_url())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(directory["newOrder"].is_string(), "{directory}");

    // Nothing else must be trusted: the same request with the system roots alone fails.
    let system = reqwest::Client::builder().build().unwrap();
    assert!(system.get(pebble.directory_url()).send().await.is_err());
}
