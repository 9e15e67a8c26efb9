//! The local CA's public PKI endpoints, checked with `openssl` as the independent verifier.

use std::path::Path;
use std::process::Command;

use ck_test_peers::free_port;
use serde_json::Value;

use crate::support::{Server, require_peer, sh};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Runs `openssl args…` in `dir`: whether it succeeded, and its stdout then stderr.
pub(crate) fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// One HTTP request: (status, content type, body).
fn request(method: reqwest::Method, url: &str, accept: Option<&str>, body: Option<Vec<u8>>) -> (u16, String, Vec<u8>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/ocsp-request").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.bytes().await.unwrap().to_vec())
    })
}

fn fetch(url: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
    request(reqwest::Method::GET, url, accept, None)
}

fn post(url: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    request(reqwest::Method::POST, url, None, Some(body))
}

/// A server with a public URL and two issued certificates, "good" and "bad" (returned), whose
/// leaves are in `good.pem` and `bad.pem` beside `intermediate.pem` and `root.pem`.
/// A server whose public URL (in its leaves' CRL and OCSP pointers) is its own address.
fn server_with_public_url(work: &Path) -> (Server, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let public = format!("http://{listen}");
    let server = Server::start(&work.join("data"), &["--listen", &listen, "--public-url", &public]);
    (server, public)
}

/// `openssl verify` of `leaf` against `root.pem`, `intermediate.pem` and `crl.pem` in `work`.
fn verify_against_crl(work: &Path, leaf: &str) -> (bool, String) {
    openssl(
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "intermediate.pem",
            "-CRLfile",
            "crl.pem",
            leaf,
        ],
        work,
    )
}

fn server_with_two_leaves(work: &Path) -> (Server, String, Value) {
    let (server, public) = server_with_public_url(work);
    let good = json(&server.cli_ok(&["cert", "create", "good.test", "--wait", "--json"]));
    let bad = json(&server.cli_ok(&["cert", "create", "bad.test", "--wait", "--json"]));
    for (name, cert) in [("good", &good), ("bad", &bad)] {
        let chain = server.cli_ok(&["cert", "get", cert["id"].as_str().unwrap(), "--pem"]);
        let (leaf, intermediate) = chain.split_at(chain.find("-----END CERTIFICATE-----").unwrap() + 26);
        std::fs::write(work.join(format!("{name}.pem")), leaf).unwrap();
        std::fs::write(work.join("intermediate.pem"), intermediate.trim_start()).unwrap();
    }
    std::fs::write(work.join("root.pem"), server.cli_ok(&["issuer", "ca", "local"])).unwrap();
    (server, public, bad)
}

#[test]
fn crl_lists_revocations_with_reasons_and_openssl_checks_against_it() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (server, public, bad) = server_with_two_leaves(work);
    // The distribution point is in every leaf.
    let (_, ext) = openssl(
        &["x509", "-in", "good.pem", "-noout", "-ext", "crlDistributionPoints"],
        work,
    );
    assert!(ext.contains(&format!("URI:{public}/pki/crl/local")), "{ext}");

    server.cli_ok(&[
        "cert",
        "revoke",
        bad["id"].as_str().unwrap(),
        "--reason",
        "keyCompromise",
    ]);
    let (status, content_type, der) = fetch(&format!("{public}/pki/crl/local"), None);
    assert_eq!((status, content_type.as_str()), (200, "application/pkix-crl"));
    std::fs::write(work.join("crl.der"), &der).unwrap();
    let (ok, text) = openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], work);
    assert!(ok, "{text}");
    let serial = bad["serial"].as_str().unwrap().to_ascii_uppercase();
    assert!(text.contains(&serial), "the revoked serial {serial} is listed: {text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number") && text.contains("Next Update"),
        "{text}"
    );
    let (ok, text) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl.der",
            "-noout",
            "-CAfile",
            "intermediate.pem",
        ],
        work,
    );
    assert!(
        ok && text.contains("verify OK"),
        "the CRL is signed by the intermediate: {text}"
    );

    let (status, content_type, pem) = fetch(&format!("{public}/pki/crl/local?format=pem"), None);
    assert_eq!((status, content_type.as_str()), (200, "application/x-pem-file"));
    std::fs::write(work.join("crl.pem"), &pem).unwrap();
    let (_, _, by_accept) = fetch(&format!("{public}/pki/crl/local"), Some("application/x-pem-file"));
    assert!(
        String::from_utf8(by_accept)
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );
    let verify = |leaf: &str| verify_against_crl(work, leaf);
    let (ok, text) = verify("good.pem");
    assert!(ok && text.contains("good.pem: OK"), "{text}");
    let (ok, text) = verify("bad.pem");
    assert!(!ok && text.contains("certificate revoked"), "{text}");

    // Each new CRL has a higher number; unknown and ACME issuers get a clear 404.
    let number = |text: &str| {
        text.lines()
            .skip_while(|l| !l.contains("CRL Number"))
            .nth(1)
            .map(|l| l.trim().to_owned())
            .unwrap()
    };
    let (_, first) = openssl(&["crl", "-in", "crl.pem", "-noout", "-text"], work);
    let third = json(&server.cli_ok(&["cert", "create", "third.test", "--wait", "--json"]));
    server.cli_ok(&[
        "cert",
        "revoke",
        third["id"].as_str().unwrap(),
        "--reason",
        "superseded",
    ]);
    let (_, _, pem) = fetch(&format!("{public}/pki/crl/local?format=pem"), None);
    std::fs::write(work.join("crl2.pem"), &pem).unwrap();
    let (_, second) = openssl(&["crl", "-in", "crl2.pem", "-noout", "-text"], work);
    assert!(
        second.contains("Superseded") && second.contains("Key Compromise"),
        "{second}"
    );
    let (n1, n2) = (number(&first), number(&second));
    assert!(
        u64::from_str_radix(&n2, 16).unwrap() > u64::from_str_radix(&n1, 16).unwrap(),
        "{n1} then {n2}"
    );
    let (status, content_type, body) = fetch(&format!("{public}/pki/crl/nope"), None);
    assert_eq!((status, content_type.as_str()), (404, "application/problem+json"));
    assert!(String::from_utf8_lossy(&body).contains("issuer 'nope'"));
    let (status, _, _) = fetch(&format!("{public}/pki/crl/local?format=xml"), None);
    assert_eq!(status, 400);
}

#[test]
fn ocsp_responder_answers_good_revoked_and_unknown_signed_by_a_delegated_certificate() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (server, public, bad) = server_with_two_leaves(work);
    let (_, aia) = openssl(
        &["x509", "-in", "good.pem", "-noout", "-ext", "authorityInfoAccess"],
        work,
    );
    let url = format!("{public}/pki/ocsp/local");
    assert!(aia.contains(&format!("OCSP - URI:{url}")), "{aia}");
    server.cli_ok(&[
        "cert",
        "revoke",
        bad["id"].as_str().unwrap(),
        "--reason",
        "keyCompromise",
    ]);

    let ask = |extra: &[&str]| {
        let mut args = vec![
            "ocsp",
            "-issuer",
            "intermediate.pem",
            "-url",
            &url,
            "-CAfile",
            "root.pem",
        ];
        args.extend_from_slice(extra);
        openssl(&args, work)
    };
    // Nonce (openssl sends one by default): echoed, so no "WARNING: no nonce in response".
    let (ok, text) = ask(&["-cert", "good.pem", "-resp_text"]);
    assert!(
        ok && text.contains("Response verify OK") && text.contains("good.pem: good"),
        "{text}"
    );
    assert!(
        !text.contains("WARNING") && text.contains("OCSP Nonce"),
        "nonce echoed: {text}"
    );
    assert!(
        text.contains("certkeeper OCSP responder"),
        "a delegated responder signs: {text}"
    );
    let (ok, text) = ask(&["-cert", "bad.pem"]);
    assert!(ok && text.contains("bad.pem: revoked"), "{text}");
    assert!(
        text.contains("Reason: keyCompromise") && text.contains("Revocation Time"),
        "{text}"
    );
    let (ok, text) = ask(&["-serial", "0x4000000000000000000000000000abcd"]);
    assert!(ok && text.contains(": unknown"), "{text}");
    // Without a nonce the response comes from the cache; both certificates in one request too.
    for _ in 0..2 {
        let (ok, text) = ask(&["-cert", "good.pem", "-no_nonce"]);
        assert!(ok && text.contains("good.pem: good"), "{text}");
    }
    let (ok, text) = ask(&["-cert", "good.pem", "-cert", "bad.pem"]);
    assert!(
        ok && text.contains("good.pem: good") && text.contains("bad.pem: revoked"),
        "{text}"
    );

    // GET with the base64 request in the path (RFC 6960 A.1).
    let (ok, text) = ask(&["-cert", "bad.pem", "-no_nonce", "-reqout", "req.der"]);
    assert!(ok, "{text}");
    let request = std::fs::read(work.join("req.der")).unwrap();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &request);
    let (status, content_type, body) = fetch(&format!("{url}/{}", encoded.replace('/', "%2F")), None);
    assert_eq!((status, content_type.as_str()), (200, "application/ocsp-response"));
    std::fs::write(work.join("resp.der"), body).unwrap();
    let (ok, text) = openssl(&["ocsp", "-respin", "resp.der", "-resp_text", "-noverify"], work);
    assert!(ok && text.contains("Cert Status: revoked"), "{text}");

    // Garbage is answered in band with malformedRequest, never a panic or an HTML page.
    for garbage in [b"not der at all".to_vec(), vec![0x30, 0x82, 0xff, 0xff], Vec::new()] {
        let (status, content_type, body) = post(&url, garbage);
        assert_eq!((status, content_type.as_str()), (200, "application/ocsp-response"));
        assert_eq!(body, [0x30, 0x03, 0x0a, 0x01, 0x01], "malformedRequest");
    }
    let (status, _, _) = post(&format!("{public}/pki/ocsp/nope"), request);
    assert_eq!(status, 404);
}

/// Revoking a certificate revokes every version clients still trust: after two renewals,
/// `openssl verify -crl_check` refuses all three leaves and the OCSP responder answers revoked
/// for each. `--version N` revokes that version alone and leaves the certificate active.
#[test]
fn revoke_covers_every_unexpired_version_on_the_crl_and_in_ocsp() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (server, public) = server_with_public_url(work);
    std::fs::write(work.join("root.pem"), server.cli_ok(&["issuer", "ca", "local"])).unwrap();
    // Each version's leaf as `<stem>-v<N>.pem` (and the intermediate).
    let save_versions = |id: &str, stem: &str, versions: u32| {
        for version in 1..=versions {
            let chain = server.cli_ok(&["cert", "get", id, "--pem", "--version", &version.to_string()]);
            let (leaf, intermediate) = chain.split_at(chain.find("-----END CERTIFICATE-----").unwrap() + 26);
            std::fs::write(work.join(format!("{stem}-v{version}.pem")), leaf).unwrap();
            std::fs::write(work.join("intermediate.pem"), intermediate.trim_start()).unwrap();
        }
    };
    let renewed = json(&server.cli_ok(&["cert", "create", "renewed.test", "--wait", "--json"]));
    let renewed = renewed["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        server.cli_ok(&["cert", "renew", &renewed, "--wait"]);
    }
    save_versions(&renewed, "renewed", 3);
    let single = json(&server.cli_ok(&["cert", "create", "single.test", "--wait", "--json"]));
    let single = single["id"].as_str().unwrap().to_owned();
    server.cli_ok(&["cert", "renew", &single, "--wait"]);
    save_versions(&single, "single", 2);

    let one = json(&server.cli_ok(&["cert", "revoke", &single, "--version", "1", "--json"]));
    assert_eq!(one["status"], "active", "an older version alone: {one}");
    assert_eq!(one["current_version"], 2);
    let all = json(&server.cli_ok(&["cert", "revoke", &renewed, "--reason", "keyCompromise", "--json"]));
    assert_eq!(all["status"], "revoked", "{all}");
    let again = server.cli(&["cert", "revoke", &single, "--version", "1"]);
    assert!(!again.status.success(), "version 1 is revoked already");

    let (status, _, pem) = fetch(&format!("{public}/pki/crl/local?format=pem"), None);
    assert_eq!(status, 200);
    std::fs::write(work.join("crl.pem"), &pem).unwrap();
    let verify = |leaf: &str| verify_against_crl(work, leaf);
    let url = format!("{public}/pki/ocsp/local");
    let ocsp = |leaf: &str| {
        openssl(
            &[
                "ocsp",
                "-issuer",
                "intermediate.pem",
                "-url",
                &url,
                "-CAfile",
                "root.pem",
                "-cert",
                leaf,
            ],
            work,
        )
    };
    for leaf in ["renewed-v1.pem", "renewed-v2.pem", "renewed-v3.pem", "single-v1.pem"] {
        let (ok, text) = verify(leaf);
        assert!(!ok && text.contains("certificate revoked"), "{leaf}: {text}");
        let (ok, text) = ocsp(leaf);
        assert!(ok && text.contains(&format!("{leaf}: revoked")), "{leaf}: {text}");
    }
    let (ok, text) = verify("single-v2.pem");
    assert!(
        ok && text.contains("single-v2.pem: OK"),
        "the current version of the other one: {text}"
    );
    let (ok, text) = ocsp("single-v2.pem");
    assert!(ok && text.contains("single-v2.pem: good"), "{text}");
}

/// Deleting a certificate whose versions clients still trust is refused with one line that
/// names both ways out: `--revoke` (its serials go on the CRL, then it is deleted) and
/// `--keep-valid` (deleted, its serial stays off the CRL).
#[test]
fn delete_refuses_a_valid_certificate_unless_told_to_revoke_or_keep_it() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (server, public) = server_with_public_url(work);
    let create = |name: &str| {
        let cert = json(&server.cli_ok(&["cert", "create", name, "--wait", "--json"]));
        (
            cert["id"].as_str().unwrap().to_owned(),
            cert["serial"].as_str().unwrap().to_ascii_uppercase(),
        )
    };
    let (revoked, revoked_serial) = create("revoked-on-delete.test");
    let (kept, kept_serial) = create("kept-on-delete.test");

    let refused = server.cli(&["cert", "delete", &revoked]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("still valid") && stderr.contains("--revoke") && stderr.contains("--keep-valid"),
        "{stderr}"
    );
    assert!(
        !server
            .cli(&["cert", "delete", &kept, "--revoke", "--keep-valid"])
            .status
            .success()
    );

    server.cli_ok(&["cert", "delete", &revoked, "--revoke"]);
    server.cli_ok(&["cert", "delete", &kept, "--keep-valid"]);
    for id in [&revoked, &kept] {
        assert!(!server.cli(&["cert", "get", id]).status.success(), "{id} is gone");
    }
    let (status, _, der) = fetch(&format!("{public}/pki/crl/local"), None);
    assert_eq!(status, 200);
    std::fs::write(work.join("crl.der"), &der).unwrap();
    let (ok, text) = openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], work);
    assert!(ok, "{text}");
    assert!(text.contains(&revoked_serial), "revoked with the deletion: {text}");
    assert!(text.contains("Cessation Of Operation"), "{text}");
    assert!(!text.contains(&kept_serial), "kept valid on purpose: {text}");
}

#[test]
fn export_as_pem_der_and_password_protected_pkcs12() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = Server::start(&work.join("data"), &[]);
    let cert = json(&server.cli_ok(&["cert", "create", "app.test", "--wait", "--json"]));
    let id = cert["id"].as_str().unwrap();
    let token = server.token();
    let get = |query: &str, password: Option<&str>| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut request = reqwest::Client::new()
                .get(format!("{}/api/v1/certificates/{id}/export{query}", server.url))
                .bearer_auth(&token);
            if let Some(password) = password {
                request = request.header("x-export-password", password);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = format!("{:?}", response.headers());
            (status, headers, response.bytes().await.unwrap().to_vec())
        })
    };
    let (status, _, pem) = get("?format=pem", None);
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(pem).unwrap(),
        server.cli_ok(&["cert", "get", id, "--pem"])
    );
    let (status, headers, der) = get("?format=der", None);
    assert_eq!(status, 200);
    assert!(
        headers.contains("application/pkix-cert") && headers.contains("app.test.der"),
        "{headers}"
    );
    std::fs::write(work.join("leaf.der"), der).unwrap();
    let (ok, text) = openssl(
        &["x509", "-inform", "DER", "-in", "leaf.der", "-noout", "-subject"],
        work,
    );
    assert!(ok && text.contains("app.test"), "{text}");

    let (status, headers, p12) = get("?format=pkcs12", Some("correct horse"));
    assert_eq!(status, 200);
    assert!(headers.contains("no-store"), "{headers}");
    std::fs::write(work.join("app.p12"), p12).unwrap();
    let (ok, text) = openssl(
        &["pkcs12", "-in", "app.p12", "-passin", "pass:correct horse", "-nodes"],
        work,
    );
    assert!(
        ok && text.contains("BEGIN PRIVATE KEY") && text.matches("BEGIN CERTIFICATE").count() == 2,
        "{text}"
    );
    let key = server.cli_ok(&["cert", "get", id, "--key"]);
    let body = |pem: &str| pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    let exported_key = &text[text.find("-----BEGIN PRIVATE KEY-----").unwrap()..];
    assert!(
        body(exported_key).starts_with(&body(&key)),
        "the server's key is in the file"
    );
    let (ok, _) = openssl(&["pkcs12", "-in", "app.p12", "-passin", "pass:wrong", "-nodes"], work);
    assert!(!ok, "a wrong password opens nothing");

    // No password, a short one, an unknown format: 400 with a clear problem; nothing exported.
    for (query, password, needle) in [
        ("?format=pkcs12", None, "password of at least 8 characters"),
        ("?format=pkcs12", Some("short"), "password of at least 8 characters"),
        ("?format=xml", None, "expected pem, der or pkcs12"),
    ] {
        let (status, headers, body) = get(query, password);
        assert_eq!(status, 400, "{query}");
        assert!(headers.contains("application/problem+json"));
        assert!(String::from_utf8_lossy(&body).contains(needle), "{query}");
    }
}

#[test]
fn est_enrollment_with_curl_and_openssl() {
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("est.secret"), "enroll-me-please-42\n").unwrap();
    std::fs::write(
        work.join("config.yaml"),
        format!(
            "est:\n  username: devices\n  password_file: {}\n  allowed_suffixes: [devices.test]\n  validity_days: 30\n",
            work.join("est.secret").display()
        ),
    )
    .unwrap();
    let config = work.join("config.yaml");
    let server = Server::start(&work.join("data"), &["--config", config.to_str().unwrap()]);
    let base = format!("{}/.well-known/est", server.url);

    let (ok, text) = sh(
        &format!("curl -fsS {base}/cacerts | base64 -d | openssl pkcs7 -inform DER -print_certs > ca-chain.pem"),
        work,
    );
    assert!(ok, "{text}");
    let chain = std::fs::read_to_string(work.join("ca-chain.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "root and intermediate: {chain}"
    );

    let csr = |name: &str, key: &str, file: &str| {
        let (ok, text) = sh(
            &format!(
                "openssl req -new -newkey {key} -nodes -keyout {file}.key -subj /CN={name} \
                 -addext subjectAltName=DNS:{name} -outform DER 2>/dev/null | base64 > {file}.b64"
            ),
            work,
        );
        assert!(ok, "{text}");
    };
    csr("dev1.devices.test", "ec -pkeyopt ec_paramgen_curve:P-256", "dev1");
    let enroll = |file: &str, credentials: &str| {
        sh(
            &format!(
                "curl -sS -o {file}.out -w '%{{http_code}}' -u '{credentials}' -H 'Content-Type: application/pkcs10' \
                 --data-binary @{file}.b64 {base}/simpleenroll"
            ),
            work,
        )
    };
    let (_, status) = enroll("dev1", "devices:enroll-me-please-42");
    assert_eq!(
        status,
        "200",
        "{}",
        std::fs::read_to_string(work.join("dev1.out")).unwrap_or_default()
    );
    let (ok, text) = sh(
        "base64 -d dev1.out | openssl pkcs7 -inform DER -print_certs > dev1.pem && \
         openssl verify -CAfile ca-chain.pem dev1.pem && openssl x509 -in dev1.pem -noout -subject -enddate",
        work,
    );
    assert!(
        ok && text.contains("dev1.pem: OK") && text.contains("dev1.devices.test"),
        "{text}"
    );
    let listed = server.cli_ok(&["cert", "list", "--json"]);
    assert!(
        listed.contains("dev1.devices.test") && listed.contains("\"enrolled-via\""),
        "{listed}"
    );

    // Wrong secret, no credentials: 401 with a Basic challenge.
    let (_, status) = enroll("dev1", "devices:wrong");
    assert_eq!(status, "401");
    let (_, headers) = sh(
        &format!("curl -sS -D - -o /dev/null --data-binary @dev1.b64 {base}/simpleenroll"),
        work,
    );
    assert!(
        headers.contains("401") && headers.to_ascii_lowercase().contains("www-authenticate: basic"),
        "{headers}"
    );
    // A name outside the profile, a weak key, a body that is not base64: refused, nothing issued.
    csr("evil.other.test", "ec -pkeyopt ec_paramgen_curve:P-256", "evil");
    let (_, status) = enroll("evil", "devices:enroll-me-please-42");
    assert_eq!(status, "403");
    assert!(
        std::fs::read_to_string(work.join("evil.out"))
            .unwrap()
            .contains("does not allow evil.other.test")
    );
    csr("weak.devices.test", "rsa:1024", "weak");
    let (_, status) = enroll("weak", "devices:enroll-me-please-42");
    assert_eq!(
        status,
        "400",
        "{}",
        std::fs::read_to_string(work.join("weak.out")).unwrap()
    );
    std::fs::write(work.join("junk.b64"), "%%% not base64 %%%").unwrap();
    let (_, status) = enroll("junk", "devices:enroll-me-please-42");
    assert_eq!(status, "400");
    assert!(
        std::fs::read_to_string(work.join("junk.out"))
            .unwrap()
            .contains("not base64")
    );
    let listed = server.cli_ok(&["cert", "list", "--json"]);
    assert!(!listed.contains("evil.other.test") && !listed.contains("weak.devices.test"));

    let (ok, text) = sh(
        &format!("curl -fsS {base}/csrattrs | base64 -d | openssl asn1parse -inform DER"),
        work,
    );
    assert!(ok && text.contains("ecdsa-with-SHA256"), "{text}");
    let (_, status) = sh(
        &format!("curl -sS -o /dev/null -w '%{{http_code}}' -X POST --data-binary @dev1.b64 {base}/simplereenroll"),
        work,
    );
    assert_eq!(
        status, "401",
        "re-enrollment needs the current certificate as TLS client certificate"
    );
}

#[test]
fn https_listener_and_est_reenrollment_with_the_current_certificate() {
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("est.secret"), "enroll-me-please-42\n").unwrap();
    std::fs::write(
        work.join("config.yaml"),
        format!(
            "tls:\n  auto_names: [127.0.0.1, localhost]\nest:\n  username: devices\n  password_file: {}\n  \
             allowed_suffixes: [devices.test]\n",
            work.join("est.secret").display()
        ),
    )
    .unwrap();
    let config = work.join("config.yaml");
    let server = Server::start(&work.join("data"), &["--config", config.to_str().unwrap()]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    std::fs::copy(work.join("data/ca.pem"), work.join("ca.pem")).unwrap();
    let (ok, text) = sh(&format!("curl -fsS --cacert ca.pem {}/health", server.url), work);
    assert!(ok, "the listener certificate verifies against the local root: {text}");
    let (ok, _) = sh(&format!("curl -fsS {}/health", server.url), work);
    assert!(!ok, "and against nothing else");
    server.cli_ok(&["cert", "list"]); // the CLI trusts <data-dir>/ca.pem

    let base = format!("{}/.well-known/est", server.url);
    let csr = |name: &str, file: &str| {
        let (ok, text) = sh(
            &format!(
                "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {file}.key \
                 -subj /CN={name} -addext subjectAltName=DNS:{name} -outform DER 2>/dev/null | base64 > {file}.b64"
            ),
            work,
        );
        assert!(ok, "{text}");
    };
    let post = |path: &str, file: &str, auth: &str| {
        sh(
            &format!(
                "curl -sS --cacert ca.pem {auth} -o {file}.out -w '%{{http_code}}' -H 'Content-Type: application/pkcs10' \
                 --data-binary @{file}.b64 {base}/{path}"
            ),
            work,
        )
        .1
    };
    csr("dev1.devices.test", "dev1");
    assert_eq!(post("simpleenroll", "dev1", "-u devices:enroll-me-please-42"), "200");
    let (ok, text) = sh(
        "base64 -d dev1.out | openssl pkcs7 -inform DER -print_certs > dev1.pem",
        work,
    );
    assert!(ok, "{text}");

    // Re-enrollment: the current certificate is the TLS client certificate; no secret needed.
    csr("dev1.devices.test", "renew");
    assert_eq!(post("simplereenroll", "renew", "--cert dev1.pem --key dev1.key"), "200");
    let (ok, text) = sh(
        "base64 -d renew.out | openssl pkcs7 -inform DER -print_certs > renewed.pem && \
         openssl verify -CAfile ca.pem -untrusted data/ca.pem renewed.pem; \
         openssl x509 -in dev1.pem -noout -serial; openssl x509 -in renewed.pem -noout -serial",
        work,
    );
    let serials: Vec<&str> = text.lines().filter(|l| l.starts_with("serial=")).collect();
    assert!(
        ok && serials.len() == 2 && serials[0] != serials[1],
        "a new certificate: {text}"
    );
    // Without a client certificate, or for other names: refused.
    assert_eq!(post("simplereenroll", "renew", ""), "401");
    csr("other.devices.test", "other");
    assert_eq!(post("simplereenroll", "other", "--cert dev1.pem --key dev1.key"), "403");
    assert!(
        std::fs::read_to_string(work.join("other.out"))
            .unwrap()
            .contains("names of the current certificate")
    );
    // A revoked certificate cannot renew itself.
    let listed = json(&server.cli_ok(&["cert", "list", "--json"]));
    let (_, serial) = sh("openssl x509 -in dev1.pem -noout -serial", work);
    let serial = serial.trim().trim_start_matches("serial=").to_ascii_lowercase();
    let id = listed
        .as_array()
        .or_else(|| listed["items"].as_array())
        .unwrap()
        .iter()
        .find(|c| c["serial"].as_str() == Some(serial.as_str()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.cli_ok(&["cert", "revoke", &id, "--reason", "keyCompromise"]);
    assert_eq!(post("simplereenroll", "renew", "--cert dev1.pem --key dev1.key"), "403");
    assert!(
        std::fs::read_to_string(work.join("renew.out"))
            .unwrap()
            .contains("revoked")
    );
}

/// SCEP with the Debian `scep` package's client (micromdm scepclient): enrollment with the
/// right challenge, refusal with a wrong one or a name outside the profile, renewal signed
/// with the issued certificate; the certificates verify with openssl against the CA.
#[test]
fn scep_enrollment_with_the_debian_scep_client() {
    if !(require_peer("scepclient", "scep") && require_peer("openssl", "openssl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("scep.secret"), "scep-challenge-1234\n").unwrap();
    std::fs::write(
        work.join("config.yaml"),
        format!(
            "scep:\n  challenge_file: {}\n  allowed_suffixes: [devices.test]\n  validity_days: 30\n",
            work.join("scep.secret").display()
        ),
    )
    .unwrap();
    let config = work.join("config.yaml");
    let server = Server::start(&work.join("data"), &["--config", config.to_str().unwrap()]);
    let url = format!("{}/scep", server.url);

    let (status, content_type, caps) = fetch(&format!("{url}?operation=GetCACaps"), None);
    let caps = String::from_utf8_lossy(&caps);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain") && caps.contains("AES") && caps.contains("POSTPKIOperation"));

    // scepclient keeps its CSR next to the key: one folder per device.
    let enroll = |device: &str, name: &str, challenge: Option<&str>| {
        std::fs::create_dir_all(work.join(device)).unwrap();
        let challenge = challenge.map(|c| format!("-challenge {c}")).unwrap_or_default();
        sh(
            &format!(
                "timeout 60 scepclient -server-url {url} {challenge} -private-key {device}/key.pem \
                 -certificate {device}/cert.pem -cn {name}"
            ),
            work,
        )
    };
    let (ok, text) = enroll("dev1", "dev1.devices.test", Some("scep-challenge-1234"));
    assert!(ok && text.contains("SUCCESS"), "{text}");
    // scepclient keeps the leaf only; the chain comes from the inventory.
    let listed: Value = serde_json::from_str(&server.cli_ok(&["cert", "list", "--json"])).unwrap();
    let enrolled = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dev1.devices.test")
        .expect("the enrollment is in the inventory");
    let chain = server.cli_ok(&["cert", "get", enrolled["id"].as_str().unwrap(), "--pem"]);
    std::fs::write(work.join("chain.pem"), chain).unwrap();
    let (ok, text) = sh(
        &format!(
            "curl -fsS -H 'Authorization: Bearer {}' {}/api/v1/issuers/local/ca.pem > root.pem && \
             openssl verify -CAfile root.pem -untrusted chain.pem dev1/cert.pem && \
             openssl x509 -in dev1/cert.pem -noout -ext subjectAltName -serial",
            server.token(),
            server.url
        ),
        work,
    );
    assert!(ok && text.contains("DNS:dev1.devices.test"), "{text}");
    let first_serial = text.lines().last().unwrap_or_default().to_owned();

    let (ok, text) = enroll("dev2", "dev2.devices.test", Some("wrong-challenge"));
    assert!(
        !ok && text.contains("badRequest"),
        "a wrong challenge must be refused: {text}"
    );
    assert!(!work.join("dev2/cert.pem").exists());
    let (ok, text) = enroll("dev3", "evil.other.test", Some("scep-challenge-1234"));
    assert!(
        !ok && text.contains("badRequest"),
        "a name outside the profile must be refused: {text}"
    );

    // Renewal: with cert.pem present, scepclient sends a RenewalReq signed with it, no challenge.
    let (ok, text) = enroll("dev1", "dev1.devices.test", None);
    assert!(ok && text.contains("SUCCESS"), "{text}");
    let (_, serial) = sh("openssl x509 -in dev1/cert.pem -noout -serial", work);
    assert_ne!(serial.trim(), first_serial.trim(), "renewal gives a new certificate");

    // The inventory lists the enrollments, without the CSR that carried the challenge.
    let listed = server.cli_ok(&["cert", "list", "--json"]);
    assert!(
        listed.contains("dev1.devices.test") && listed.contains("\"scep\""),
        "{listed}"
    );
    assert!(
        !listed.contains("scep-challenge-1234") && !listed.contains("evil.other.test"),
        "{listed}"
    );

    // Malformed messages: 400 problem documents, not a panic or a CertRep.
    let (status, content_type, _) = post(&format!("{url}?operation=PKIOperation"), b"not a CMS message".to_vec());
    assert_eq!((status, content_type.as_str()), (400, "application/problem+json"));
    let (status, _, _) = fetch(&format!("{url}?operation=PKIOperation&message=%%%"), None);
    assert_eq!(status, 400);
    let (status, _, _) = fetch(&format!("{url}?operation=Nonsense"), None);
    assert_eq!(status, 400);
    let log = server.log_text();
    assert!(!log.contains("scep-challenge-1234"), "the challenge must not be logged");
}
