//! Security findings: scep.
//!
//! #4: the RA key was a Bleichenbacher oracle (badAlg after a good PKCS#1 v1.5 padding,
//! badMessageCheck after a bad one, unauthenticated and unlimited). #14 (SCEP part): a
//! RenewalReq signed with an expired certificate was accepted.
//!
//! The requests are made with ck-pki's client side (`pkcs_req`, `crafted_pkcs_req`,
//! `renewal_req`), which encrypts the content key in a hand-made RSA block where needed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ck_domain::KeyType;
use ck_pki::KeyBlock;

use crate::support::{BIN, Server, require_peer};

const CHALLENGE: &str = "scep-oracle-challenge";

/// A data directory and a config file with SCEP on; `extra` is appended to the `scep:` section.
fn scep_config(work: &Path, extra: &str) -> PathBuf {
    std::fs::write(work.join("scep.secret"), format!("{CHALLENGE}\n")).unwrap();
    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "scep:\n  challenge_file: {}\n  allowed_suffixes: [devices.test]\n  validity_days: 30\n{extra}",
            work.join("scep.secret").display()
        ),
    )
    .unwrap();
    config
}

/// One HTTP answer: status, Retry-After, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

fn http(client: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<Vec<u8>>) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut request = client.request(method, url);
        if let Some(body) = body {
            request = request.header("content-type", "application/x-pki-message").body(body);
        }
        let response = request.send().await.unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Answer {
            status: response.status().as_u16(),
            retry_after,
            body: response.bytes().await.unwrap().to_vec(),
        }
    })
}

/// The RA certificate from GetCACert (the default ECDSA CA: the RA certificate alone).
fn ra_cert(client: &reqwest::Client, base: &str) -> Vec<u8> {
    let answer = http(
        client,
        reqwest::Method::GET,
        &format!("{base}/scep?operation=GetCACert"),
        None,
    );
    assert_eq!(answer.status, 200);
    answer.body
}

fn pki_operation(client: &reqwest::Client, base: &str, message: Vec<u8>) -> Answer {
    http(
        client,
        reqwest::Method::POST,
        &format!("{base}/scep?operation=PKIOperation"),
        Some(message),
    )
}

/// Envelopes whose RSA block has valid PKCS#1 v1.5 padding (around a key that does not open
/// the content, as an attacker's modified ciphertext has) and invalid padding (three ways)
/// get one answer: the same status, failInfo and size. Before the fix, naming an unsupported
/// cipher made the server answer badAlg after a good padding and badMessageCheck after a bad
/// one: that case gets one answer too (badAlg, decided before the key is decrypted).
#[test]
fn scep_padding_oracle_answers_are_indistinguishable() {
    let dir = tempfile::tempdir().unwrap();
    let config = scep_config(dir.path(), "  pki_operations_per_minute: 0\n");
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    let ra = ra_cert(&client, &server.url);
    let key = ck_pki::generate_key(KeyType::Rsa2048).unwrap();
    let csr = ck_pki::scep_csr(&key, "oracle.devices.test", Some(CHALLENGE)).unwrap();

    for unknown_cipher in [false, true] {
        // (conforming, status, failInfo, size) of every answer.
        let mut answers = Vec::new();
        for round in 0..8 {
            for block in KeyBlock::ALL.into_iter().filter(|b| *b != KeyBlock::Genuine) {
                let message =
                    ck_pki::crafted_pkcs_req(&ra, &key, &csr, &format!("tx-{round:04}"), block, unknown_cipher)
                        .unwrap();
                let answer = pki_operation(&client, &server.url, message);
                assert_eq!(answer.status, 200, "a CertRep, not an HTTP error ({block:?})");
                let rep = ck_pki::read_cert_rep(&answer.body, &key).unwrap();
                answers.push((block.conforming(), rep.status, rep.fail_info, answer.body.len()));
            }
        }
        let expected_fail = if unknown_cipher { "0" } else { "1" };
        for (conforming, status, fail_info, _) in &answers {
            assert_eq!(
                (status.as_str(), fail_info.as_deref()),
                ("2", Some(expected_fail)),
                "conforming padding: {conforming}, unknown cipher: {unknown_cipher}"
            );
        }
        let sizes = |conforming: bool| {
            answers
                .iter()
                .filter(|a| a.0 == conforming)
                .map(|a| a.3)
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(
            sizes(true),
            sizes(false),
            "answer sizes differ between valid and invalid padding (unknown cipher: {unknown_cipher})"
        );
    }

    // The genuine envelope still opens: the CSR is read and issued.
    let message = ck_pki::crafted_pkcs_req(&ra, &key, &csr, "tx-genuine", KeyBlock::Genuine, false).unwrap();
    let rep = ck_pki::read_cert_rep(&pki_operation(&client, &server.url, message).body, &key).unwrap();
    assert_eq!((rep.status.as_str(), rep.fail_info), ("0", None));
    assert!(!rep.certificates.is_empty());
}

/// Where Debian's faketime keeps its preload library.
fn libfaketime() -> PathBuf {
    let (ok, text) = crate::support::sh("ls /usr/lib/*/faketime/libfaketime.so.1 | head -1", Path::new("/"));
    let path = PathBuf::from(text.trim());
    assert!(ok && path.exists(), "libfaketime.so.1 not found: {text}");
    path
}

/// `certkeeper serve` with its wall clock moved by `offset` (libfaketime, e.g. `-100d`).
struct ShiftedServer {
    child: Child,
    url: String,
}

impl ShiftedServer {
    fn start(data_dir: &Path, config: &Path, offset: &str) -> Self {
        let url_file = data_dir.join("server.url");
        let _ = std::fs::remove_file(&url_file);
        let child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", offset)
            // Timers and leases run on the monotonic clock: leave it alone.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("CERTKEEPER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Owned by `server` at once, so that a failed start still ends the process (Drop).
        let mut server = Self {
            child,
            url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&url_file) {
                server.url = text.trim().to_owned();
                return server;
            }
            assert!(Instant::now() < deadline, "the shifted server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ShiftedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An enrolled device, as what it can do next: send a RenewalReq signed with its certificate
/// to a server and tell (pkiStatus, failInfo). (A closure, so that the rcgen key type, which
/// this crate does not depend on, need not be named.)
type Renewal = Box<dyn Fn(&reqwest::Client, &str) -> (String, Option<String>)>;

fn enroll(client: &reqwest::Client, base: &str, name: &'static str) -> Renewal {
    let key = ck_pki::generate_key(KeyType::Rsa2048).unwrap();
    let ra = ra_cert(client, base);
    let csr = ck_pki::scep_csr(&key, name, Some(CHALLENGE)).unwrap();
    let message = ck_pki::pkcs_req(&ra, &key, &csr, &format!("enroll-{name}")).unwrap();
    let rep = ck_pki::read_cert_rep(&pki_operation(client, base, message).body, &key).unwrap();
    assert_eq!((rep.status.as_str(), rep.fail_info.as_deref()), ("0", None), "{name}");
    let cert = rep.certificates.first().unwrap().clone();
    Box::new(move |client: &reqwest::Client, base: &str| {
        let ra = ra_cert(client, base);
        let csr = ck_pki::scep_csr(&key, name, None).unwrap();
        let message = ck_pki::renewal_req(&ra, &key, &cert, &csr, &format!("renew-{name}")).unwrap();
        let rep = ck_pki::read_cert_rep(&pki_operation(client, base, message).body, &key).unwrap();
        (rep.status, rep.fail_info)
    })
}

/// A RenewalReq signed with a certificate of this CA that expired (issued while the server's
/// clock was 100 days back, valid 30 days) or is not valid yet (issued 100 days ahead) is
/// refused with badCertId; one signed with a current certificate still renews.
#[test]
fn scep_renewal_with_expired_signer_is_refused() {
    if !require_peer("faketime", "faketime") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = scep_config(dir.path(), "");
    let data = dir.path().join("data");
    let client = reqwest::Client::new();

    // The CA is made at the earliest clock, so it is valid at every later one.
    let expired = {
        let past = ShiftedServer::start(&data, &config, "-100d");
        enroll(&client, &past.url, "expired.devices.test")
    };
    let not_yet_valid = {
        let future = ShiftedServer::start(&data, &config, "+100d");
        enroll(&client, &future.url, "future.devices.test")
    };
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let current = enroll(&client, &server.url, "current.devices.test");

    assert_eq!(
        expired(&client, &server.url),
        ("2".to_owned(), Some("4".to_owned())),
        "a RenewalReq signed with an expired certificate must be refused (badCertId)"
    );
    assert_eq!(
        not_yet_valid(&client, &server.url),
        ("2".to_owned(), Some("4".to_owned())),
        "a RenewalReq signed with a not-yet-valid certificate must be refused (badCertId)"
    );
    assert_eq!(current(&client, &server.url), ("0".to_owned(), None));
}

/// PKIOperation is limited per client address (here 1 a minute after a burst of 20; the
/// default refills one a second): the 21st request gets 429 with Retry-After, before any work
/// on the message; another address, and the other SCEP operations, are not affected.
#[test]
fn scep_pkioperation_is_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = scep_config(dir.path(), "  pki_operations_per_minute: 1\n");
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    let garbage = || b"not a CMS message".to_vec();

    for i in 0..20 {
        let answer = pki_operation(&client, &server.url, garbage());
        assert_eq!(answer.status, 400, "request {i} is within the burst");
    }
    let limited = pki_operation(&client, &server.url, garbage());
    assert_eq!(limited.status, 429, "the 21st PKIOperation in a burst is refused");
    let wait: u64 = limited.retry_after.as_deref().unwrap_or_default().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    let get = http(
        &client,
        reqwest::Method::GET,
        &format!("{}/scep?operation=PKIOperation&message=AAAA", server.url),
        None,
    );
    assert_eq!(get.status, 429, "PKIOperation by GET shares the limit");

    // GetCACaps and GetCACert cost no private-key operation and stay open.
    assert!(!ra_cert(&client, &server.url).is_empty());

    // Another client address (127.0.0.2 is loopback too) has its own allowance.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    assert_eq!(pki_operation(&other, &server.url, garbage()).status, 400);
}
