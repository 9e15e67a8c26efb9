//! Security findings: the low-severity ones of finding 14 (enrollment, name policy, renewal
//! after a key compromise, CSR keys), each reproduced against the real binary.

use std::path::Path;

use serde_json::{Value, json};

use crate::security::Http;
use crate::support::{Server, require_peer, sh};

const EST_SECRET: &str = "enroll-me-please-42";

/// A server with an HTTPS listener (local CA certificate for 127.0.0.1), EST for names under
/// `devices.test`, and `extra` appended to its config file.
fn est_server(work: &Path, extra: &str) -> Server {
    std::fs::write(work.join("est.secret"), format!("{EST_SECRET}\n")).unwrap();
    std::fs::write(
        work.join("config.yaml"),
        format!(
            "tls:\n  auto_names: [127.0.0.1, localhost]\n{extra}est:\n  username: devices\n  password_file: {}\n  \
             allowed_suffixes: [devices.test]\n",
            work.join("est.secret").display()
        ),
    )
    .unwrap();
    let config = work.join("config.yaml");
    let server = Server::start(&work.join("data"), &["--config", config.to_str().unwrap()]);
    std::fs::copy(work.join("data/ca.pem"), work.join("ca.pem")).unwrap();
    server
}

/// A P-256 key `<file>.key` and a CSR for `names` (first = CN) as base64 DER in `<file>.b64`.
fn est_csr(work: &Path, names: &[&str], file: &str) {
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let (ok, text) = sh(
        &format!(
            "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {file}.key \
             -subj '/CN={}' -addext 'subjectAltName={}' -outform DER 2>/dev/null | base64 > {file}.b64",
            names[0],
            sans.join(",")
        ),
        work,
    );
    assert!(ok, "{text}");
}

/// POSTs `<file>.b64` to `/.well-known/est/<path>` with extra curl arguments; the HTTP status
/// and the body.
fn est_post(server: &Server, work: &Path, path: &str, file: &str, auth: &str) -> (String, String) {
    let (_, status) = sh(
        &format!(
            "curl -sS --cacert ca.pem {auth} -o {file}.out -w '%{{http_code}}' -H 'Content-Type: application/pkcs10' \
             --data-binary @{file}.b64 {}/.well-known/est/{path}",
            server.url
        ),
        work,
    );
    (
        status,
        std::fs::read_to_string(work.join(format!("{file}.out"))).unwrap_or_default(),
    )
}

/// Finding 14: EST re-enrollment took any client certificate the TLS listener accepts, also
/// one from the extra client CAs (`tls.client_ca_file`, partners' CAs meant for tokens), and
/// checked revocation only against the local issuer: a partner CA's certificate for a
/// device's name got that device a certificate from our CA. Now only a certificate that one of
/// our local CAs issued, that its store knows and has not revoked, re-enrolls.
#[test]
fn est_reenroll_with_foreign_ca_cert_is_refused() {
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // The partner CA, and a client certificate it issued for a device name of ours.
    let (ok, text) = sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout partner.key \
           -subj /CN=Partner-CA -days 30 -out partner.pem 2>&1 && \
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout foreign.key \
           -subj /CN=dev1.devices.test -out foreign.csr 2>&1 && \
         printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=clientAuth\\n\
subjectAltName=DNS:dev1.devices.test\\n' > leaf.ext && \
         openssl x509 -req -in foreign.csr -CA partner.pem -CAkey partner.key -CAcreateserial -days 10 \
           -extfile leaf.ext -out foreign.pem 2>&1",
        work,
    );
    assert!(ok, "{text}");
    let client_ca = work.join("partner.pem");
    let server = est_server(work, &format!("  client_ca_file: {}\n", client_ca.display()));

    // The attack: re-enroll dev1.devices.test with the partner's certificate.
    est_csr(work, &["dev1.devices.test"], "steal");
    let (status, body) = est_post(
        &server,
        work,
        "simplereenroll",
        "steal",
        "--cert foreign.pem --key foreign.key",
    );
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("not issued by certkeeper's local CA"), "{body}");
    let listed = server.cli_ok(&["cert", "list", "--json"]);
    assert!(!listed.contains("dev1.devices.test"), "nothing issued: {listed}");

    // A device enrolled here still re-enrolls with its own certificate.
    est_csr(work, &["dev1.devices.test"], "dev1");
    let (status, body) = est_post(
        &server,
        work,
        "simpleenroll",
        "dev1",
        &format!("-u devices:{EST_SECRET}"),
    );
    assert_eq!(status, "200", "{body}");
    let (ok, text) = sh(
        "base64 -d dev1.out | openssl pkcs7 -inform DER -print_certs > dev1.pem",
        work,
    );
    assert!(ok, "{text}");
    est_csr(work, &["dev1.devices.test"], "renew");
    let (status, body) = est_post(
        &server,
        work,
        "simplereenroll",
        "renew",
        "--cert dev1.pem --key dev1.key",
    );
    assert_eq!(status, "200", "{body}");
}

/// Finding 14: the enrollment profile's `allowed_suffixes` let `*.devices.test` through (it
/// ends in `.devices.test`), so any device holding the shared enrollment secret could get a
/// wildcard for every other device's name. Wildcards now need `allow_wildcards: true` in the
/// EST/SCEP section.
#[test]
fn enrollment_suffix_does_not_admit_wildcard() {
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = est_server(work, "");
    let auth = format!("-u devices:{EST_SECRET}");
    for (file, names) in [
        ("wild", &["*.devices.test"][..]),
        ("mixed", &["dev2.devices.test", "*.devices.test"][..]),
    ] {
        est_csr(work, names, file);
        let (status, body) = est_post(&server, work, "simpleenroll", file, &auth);
        assert_eq!(status, "403", "{names:?}: {body}");
        assert!(body.contains("does not allow wildcard names"), "{body}");
        assert!(body.contains("allow_wildcards"), "the fix is named: {body}");
    }
    let listed = server.cli_ok(&["cert", "list", "--json"]);
    assert!(!listed.contains("devices.test"), "nothing issued: {listed}");
    // A device's own name is still enrolled.
    est_csr(work, &["dev2.devices.test"], "dev2");
    let (status, body) = est_post(&server, work, "simpleenroll", "dev2", &auth);
    assert_eq!(status, "200", "{body}");
}

/// POSTs a certificate request; the status and the answer.
async fn create(http: &Http, token: &str, body: Value) -> (u16, Value) {
    http.call("POST", "/certificates?wait=30", token, Some(body)).await
}

/// Finding 14: with `certificates.allowed_domains` set, IP SANs still passed (unless
/// `deny_ip_addresses`), so a token limited to `*.internal` by policy got certificates for any
/// address. An IP SAN now needs an explicit `certificates.allowed_ip_ranges`.
#[tokio::test(flavor = "multi_thread")]
async fn ip_san_bypasses_allowed_domains_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(
        work.join("domains.yaml"),
        "certificates:\n  allowed_domains: [internal]\n",
    )
    .unwrap();
    let config = work.join("domains.yaml");
    let server = Server::start(&work.join("data"), &["--config", config.to_str().unwrap()]);
    let (http, token) = (Http::new(&server.url), server.token());
    for ip in ["10.1.2.3", "203.0.113.7", "::1"] {
        let (status, body) = create(&http, &token, json!({"common_name": "a.internal", "sans": [ip]})).await;
        assert!((400..500).contains(&status), "{ip} must be refused: {status} {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(ip) && detail.contains("allowed_ip_ranges"), "{detail}");
    }
    let (status, body) = create(&http, &token, json!({"common_name": "a.internal"})).await;
    assert!(status < 300, "names under the allowed domains still pass: {body}");
    drop(server);

    // With an explicit range, addresses inside it pass and the others do not.
    std::fs::write(
        work.join("ranges.yaml"),
        "certificates:\n  allowed_domains: [internal]\n  allowed_ip_ranges: [10.0.0.0/8]\n",
    )
    .unwrap();
    let config = work.join("ranges.yaml");
    let server = Server::start(&work.join("data2"), &["--config", config.to_str().unwrap()]);
    let (http, token) = (Http::new(&server.url), server.token());
    let (status, body) = create(
        &http,
        &token,
        json!({"common_name": "b.internal", "sans": ["10.1.2.3"]}),
    )
    .await;
    assert!(status < 300, "{body}");
    let (status, body) = create(
        &http,
        &token,
        json!({"common_name": "c.internal", "sans": ["192.168.1.1"]}),
    )
    .await;
    assert!((400..500).contains(&status), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed IP ranges are 10.0.0.0/8"),
        "{body}"
    );
}

/// The public key (PEM) of version `version` of certificate `id`.
async fn version_public_key(http: &Http, token: &str, id: &str, version: u32, work: &Path) -> String {
    let response = http
        .raw("GET", &format!("/api/v1/certificates/{id}/pem?version={version}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let file = format!("v{version}.pem");
    std::fs::write(work.join(&file), response.text().await.unwrap()).unwrap();
    let (ok, key) = sh(&format!("openssl x509 -in {file} -noout -pubkey"), work);
    assert!(ok, "{key}");
    key
}

/// Finding 14: after a keyCompromise revocation, `renew` re-signed the stored CSR, i.e.
/// certified the compromised key again. Now a CSR-mode certificate refuses (409, naming the
/// fix: a new key and CSR), and a server-key certificate gets a new key.
#[tokio::test(flavor = "multi_thread")]
async fn renew_after_key_compromise_does_not_reuse_key() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = Server::start(&work.join("data"), &[]);
    let (http, token) = (Http::new(&server.url), server.token());
    let (ok, text) = sh(
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.key \
         -subj /CN=compromised.example -addext subjectAltName=DNS:compromised.example -out k.csr 2>&1",
        work,
    );
    assert!(ok, "{text}");
    let csr = std::fs::read_to_string(work.join("k.csr")).unwrap();
    let (status, made) = create(&http, &token, json!({"csr": csr})).await;
    assert!(status < 300, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let (status, body) = http
        .call(
            "POST",
            &format!("/certificates/{id}/revoke"),
            &token,
            Some(json!({"reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The attack (or the mistake): renew it, and the stolen key is good for another term.
    let (status, body) = http
        .call("POST", &format!("/certificates/{id}/renew?wait=30"), &token, None)
        .await;
    assert_eq!(status, 409, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("keyCompromise") && detail.contains("new CSR"),
        "{detail}"
    );
    let (_, versions) = http
        .call("GET", &format!("/certificates/{id}/versions"), &token, None)
        .await;
    let count = versions
        .as_array()
        .or_else(|| versions["items"].as_array())
        .map(Vec::len);
    assert_eq!(count, Some(1), "no new version: {versions}");

    // A server-made key is new in every version, so that renewal is allowed and re-keys.
    let (status, made) = create(&http, &token, json!({"common_name": "server-key.example"})).await;
    assert!(status < 300, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let (status, body) = http
        .call(
            "POST",
            &format!("/certificates/{id}/revoke"),
            &token,
            Some(json!({"reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http
        .call("POST", &format!("/certificates/{id}/renew?wait=30"), &token, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let old = version_public_key(&http, &token, &id, 1, work).await;
    let new = version_public_key(&http, &token, &id, 2, work).await;
    assert_ne!(old, new, "the renewal made a new key");
}

/// Finding 14: an RSA CSR with public exponent 3 was signed. Now a CSR's RSA exponent must be
/// odd and above 2^16 (65537 in practice).
#[tokio::test(flavor = "multi_thread")]
async fn rsa_csr_with_small_exponent_is_refused() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = Server::start(&work.join("data"), &[]);
    let (http, token) = (Http::new(&server.url), server.token());
    let (ok, text) = sh(
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -pkeyopt rsa_keygen_pubexp:3 -out e3.key 2>&1 && \
         openssl req -new -key e3.key -subj /CN=e3.example -addext subjectAltName=DNS:e3.example -out e3.csr 2>&1 && \
         openssl req -in e3.csr -noout -text | grep -i exponent",
        work,
    );
    assert!(ok && text.contains("Exponent: 3 "), "{text}");
    let csr = std::fs::read_to_string(work.join("e3.csr")).unwrap();
    let (status, body) = create(&http, &token, json!({"csr": csr})).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("exponent 3") && detail.contains("65537"), "{detail}");
    let (_, listed) = http.call("GET", "/certificates", &token, None).await;
    assert!(!listed.to_string().contains("e3.example"), "nothing stored: {listed}");
}

/// Finding 14 (renewal after a key compromise), agent side: an agent that reuses its key
/// would send a CSR for the compromised key after the revocation, and the server signed it.
/// Now the CSR of a key revoked as compromised is refused (409) and a new key is certified.
#[tokio::test(flavor = "multi_thread")]
async fn agent_csr_for_a_compromised_key_is_refused() {
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let server = Server::start(&work.join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let (status, agent) = http
        .call("POST", "/agents", &admin, Some(json!({"name": "host-1"})))
        .await;
    assert_eq!(status, 201, "{agent}");
    let agent_token = agent["token"].as_str().unwrap().to_owned();
    let (status, cert) = create(
        &http,
        &admin,
        json!({"common_name": "reused.internal", "agent": "host-1"}),
    )
    .await;
    assert_eq!(status, 202, "{cert}");
    let id = cert["id"].as_str().unwrap().to_owned();
    let csr = |file: &str| {
        let (ok, text) = sh(
            &format!(
                "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {file}.key \
                 -subj /CN=reused.internal -addext subjectAltName=DNS:reused.internal -out {file}.csr 2>&1"
            ),
            work,
        );
        assert!(ok, "{text}");
        std::fs::read_to_string(work.join(format!("{file}.csr"))).unwrap()
    };
    let send = |csr: String| {
        let (http, token, id) = (&http, agent_token.clone(), id.clone());
        async move {
            http.call(
                "POST",
                &format!("/agent/certificates/{id}/csr"),
                &token,
                Some(json!({"csr": csr})),
            )
            .await
        }
    };
    let first = csr("first");
    let (status, body) = send(first.clone()).await;
    assert!(status < 300, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http.call("GET", &format!("/certificates/{id}"), &admin, None).await.1["status"] != "active" {
        assert!(std::time::Instant::now() < deadline, "not issued");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, _) = http
        .call(
            "POST",
            &format!("/certificates/{id}/revoke"),
            &admin,
            Some(json!({"reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = http
        .call("POST", &format!("/certificates/{id}/renew"), &admin, None)
        .await;
    assert!(status < 300, "{body}");
    // The reused key: refused, naming the fix. A new key: certified.
    let (status, body) = send(first).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("new key"), "{body}");
    let (status, body) = send(csr("second")).await;
    assert!(status < 300, "{body}");
}
