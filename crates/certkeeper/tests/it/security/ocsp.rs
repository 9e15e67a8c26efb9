//! Security findings: OCSP (finding 6, cache poisoning without credentials).

use std::path::Path;
use std::process::Command;

use ck_test_peers::free_port;

use crate::pki::openssl;
use crate::support::{Server, require_peer};

/// Sends OCSP requests (GET when `get`, else POST) and returns (status, cache-control, body)
/// of each.
fn send_all(url: &str, requests: Vec<Vec<u8>>, get: bool) -> Vec<(u16, String, Vec<u8>)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut answers = Vec::with_capacity(requests.len());
        // A few dozen at a time: enough to be quick, few enough for a debug build.
        for chunk in requests.chunks(32) {
            let sent = chunk.iter().map(|der| {
                let request = if get {
                    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
                    client.get(format!("{url}/{}", encoded.replace('/', "%2F")))
                } else {
                    client
                        .post(url)
                        .header("content-type", "application/ocsp-request")
                        .body(der.clone())
                };
                async move {
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    let cache = response
                        .headers()
                        .get("cache-control")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    (status, cache, response.bytes().await.unwrap().to_vec())
                }
            });
            answers.extend(join_all(sent).await);
        }
        answers
    })
}

/// Runs the requests of one chunk concurrently; their answers in order.
async fn join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// The status openssl reads in a DER OCSP response.
fn status_of(work: &Path, body: &[u8]) -> String {
    std::fs::write(work.join("answer.der"), body).unwrap();
    let (ok, text) = openssl(&["ocsp", "-respin", "answer.der", "-resp_text", "-noverify"], work);
    assert!(ok, "{text}");
    text
}

/// The attack of the review: a request that names another issuer's hashes with a real serial
/// (no credentials needed) made the responder cache `unknown` under the serial alone, and
/// legitimate clients then got "No Status found" for an hour, also through public GET caches.
/// Now the cache is keyed by the whole CertID and keeps no answer about a CertID that is not
/// ours: the legitimate answer stays `good`, and 2,000 bogus CertIDs leave nothing cached.
#[test]
fn ocsp_cache_poisoning_with_another_issuers_hashes_leaves_the_legitimate_answer_good() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let public = format!("http://{listen}");
    let server = Server::start(&work.join("data"), &["--listen", &listen, "--public-url", &public]);
    let created: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "create", "victim.test", "--wait", "--json"])).unwrap();
    let chain = server.cli_ok(&["cert", "get", created["id"].as_str().unwrap(), "--pem"]);
    let (leaf, intermediate) = chain.split_at(chain.find("-----END CERTIFICATE-----").unwrap() + 26);
    std::fs::write(work.join("victim.pem"), leaf).unwrap();
    std::fs::write(work.join("intermediate.pem"), intermediate.trim_start()).unwrap();
    std::fs::write(work.join("root.pem"), server.cli_ok(&["issuer", "ca", "local"])).unwrap();
    let (ok, serial) = openssl(&["x509", "-in", "victim.pem", "-noout", "-serial"], work);
    assert!(ok, "{serial}");
    let serial = format!("0x{}", serial.trim().trim_start_matches("serial="));
    let url = format!("{public}/pki/ocsp/local");

    // The poison: the victim's serial under another issuer's name and key hashes (the root's),
    // without a nonce so that it would be cacheable, with SHA-1 and SHA-256 CertIDs, over GET
    // (publicly cacheable) and POST, twice each.
    let mut poison = Vec::new();
    for digest in ["-sha1", "-sha256"] {
        let file = format!("poison{digest}.der");
        let (ok, text) = openssl(
            &[
                "ocsp",
                "-issuer",
                "root.pem",
                digest,
                "-serial",
                &serial,
                "-no_nonce",
                "-reqout",
                &file,
            ],
            work,
        );
        assert!(ok, "{text}");
        poison.push(std::fs::read(work.join(&file)).unwrap());
    }
    for get in [true, false] {
        for (status, cache, body) in send_all(&url, [poison.clone(), poison.clone()].concat(), get) {
            assert_eq!(status, 200);
            assert!(status_of(work, &body).contains("Cert Status: unknown"));
            assert_eq!(
                cache, "no-store",
                "an answer about a CertID not ours is never publicly cacheable"
            );
        }
    }

    // The legitimate client, as a relying party would ask (no nonce: the cacheable case).
    let ask_legitimately = || {
        let (ok, text) = openssl(
            &[
                "ocsp",
                "-issuer",
                "intermediate.pem",
                "-cert",
                "victim.pem",
                "-no_nonce",
                "-url",
                &url,
                "-CAfile",
                "root.pem",
            ],
            work,
        );
        assert!(ok, "{text}");
        assert!(
            text.contains("Response verify OK") && text.contains("victim.pem: good"),
            "the legitimate CertID must be answered good after the poisoning: {text}"
        );
    };
    ask_legitimately();
    ask_legitimately(); // from the cache now

    // A flood of distinct bogus CertIDs: random serials under the root's hashes, and random
    // serials under ours (unknown serials). Neither kind is kept.
    let (ok, text) = openssl(
        &[
            "ocsp",
            "-issuer",
            "root.pem",
            "-serial",
            "0x4142434445464748494a4b4c4d4e4f50",
            "-no_nonce",
            "-reqout",
            "foreign.der",
        ],
        work,
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        &[
            "ocsp",
            "-issuer",
            "intermediate.pem",
            "-serial",
            "0x4142434445464748494a4b4c4d4e4f50",
            "-no_nonce",
            "-reqout",
            "ours.der",
        ],
        work,
    );
    assert!(ok, "{text}");
    let template_serial: Vec<u8> = (0x41..=0x50).collect();
    let mut flood = Vec::new();
    for (n, template) in ["foreign.der", "ours.der"].iter().enumerate() {
        let template = std::fs::read(work.join(template)).unwrap();
        let at = template
            .windows(template_serial.len())
            .position(|w| w == template_serial.as_slice())
            .expect("the serial in the request");
        for i in 0..1_000u32 {
            let mut request = template.clone();
            // Distinct, positive 16-byte serials (the first byte stays below 0x80).
            request[at] = 0x10 + u8::try_from(n).unwrap();
            request[at + 12..at + 16].copy_from_slice(&i.to_be_bytes());
            flood.push(request);
        }
    }
    let answers = send_all(&url, flood, false);
    assert_eq!(answers.len(), 2_000);
    for (status, _, body) in answers.iter().step_by(199) {
        assert_eq!(*status, 200);
        assert!(status_of(work, body).contains("Cert Status: unknown"));
    }
    let metrics = Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", server.token()))
        .arg(format!("{public}/metrics"))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let cached: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("certkeeper_ocsp_cached_responses "))
        .unwrap_or_else(|| panic!("no OCSP cache gauge in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(cached, 1, "only the legitimate answer is kept, whatever the flood");
    ask_legitimately();
}
