//! Bad input gets a 4xx problem+json with a useful detail, the server keeps running, and
//! nothing is half-written.

use base64::Engine;
use serde_json::{Value, json};

use crate::support::Server;

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: String, token: Option<&str>) -> (u16, String, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/v1{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token.or(Some(self.token.as_str())).filter(|t| !t.is_empty()) {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (u16, String, Value) {
        let request = self
            .http
            .get(format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token);
        read(request.send().await.unwrap()).await
    }
}

/// Status, content type and body (JSON when it parses) of a response.
async fn read(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[track_caller]
fn assert_problem(answer: &(u16, String, Value), status: u16, detail_part: &str) {
    let (got_status, content_type, body) = answer;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"], status);
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(detail_part), "detail {detail:?} lacks {detail_part:?}");
    assert!(
        !detail.contains("panicked") && !detail.contains("src/"),
        "internal details leaked: {detail}"
    );
}

fn mis_signed_csr() -> String {
    let names = vec![ck_domain::SubjectAltName::parse("tampered.internal").unwrap()];
    let csr = ck_pki::ServerKey::generate(ck_domain::KeyType::EcdsaP256, &names)
        .unwrap()
        .csr_pem;
    let body: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut der = engine.decode(body).unwrap();
    // The subject CN sits in the signed part: change one letter of "tampered".
    let idx = der.windows(8).position(|w| w == b"tampered").unwrap();
    der[idx] = b'T';
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        engine.encode(der)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_problem_documents_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let api = Api {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        token: server.token(),
    };
    let create = |body: Value| body.to_string();

    assert_problem(
        &api.post("/certificates", create(json!({"common_name": "exa mple.com"})), None)
            .await,
        400,
        "invalid character ' '",
    );
    assert_problem(
        &api.post("/certificates", create(json!({"common_name": "a..b.internal"})), None)
            .await,
        400,
        "empty label",
    );
    assert_problem(
        &api.post("/certificates", create(json!({"common_name": "*.com"})), None)
            .await,
        400,
        "wildcard",
    );
    assert_problem(
        &api.post("/certificates", create(json!({"sans": ["a.*.example.com"]})), None)
            .await,
        400,
        "wildcard",
    );
    assert_problem(
        &api.post("/certificates", create(json!({})), None).await,
        400,
        "no names given",
    );
    assert_problem(
        &api.post("/certificates", create(json!({"csr": "garbage"})), None).await,
        400,
        "the CSR cannot be parsed",
    );
    assert_problem(
        &api.post("/certificates", create(json!({"csr": mis_signed_csr()})), None)
            .await,
        400,
        "signature does not verify",
    );
    assert_problem(
        &api.post(
            "/certificates",
            create(json!({"common_name": "a.internal", "issuer": "nope"})),
            None,
        )
        .await,
        400,
        "unknown issuer 'nope'",
    );
    assert_problem(
        &api.post(
            "/certificates",
            create(json!({"common_name": "a.internal", "key_type": "dsa"})),
            None,
        )
        .await,
        400,
        "unknown key type",
    );
    assert_problem(
        &api.post(
            "/certificates",
            create(json!({"common_name": "a.internal", "validity_days": 5000})),
            None,
        )
        .await,
        400,
        "validity",
    );
    assert_problem(
        &api.post(
            "/certificates",
            create(json!({"common_name": "a.internal", "colour": "red"})),
            None,
        )
        .await,
        422,
        "unknown field `colour`",
    );
    assert_problem(&api.post("/certificates", "{not json".to_owned(), None).await, 400, "");
    let huge = create(json!({"common_name": "a.internal", "name": "x".repeat(100 * 1024)}));
    assert_problem(&api.post("/certificates", huge, None).await, 413, "larger than");
    assert_problem(
        &api.post(
            "/certificates",
            create(json!({"common_name": "a.internal"})),
            Some("ck_wrong"),
        )
        .await,
        401,
        "not valid",
    );
    assert_problem(
        &api.post("/certificates", create(json!({"common_name": "a.internal"})), Some(""))
            .await,
        401,
        "Authorization",
    );
    assert_problem(&api.get("/certificates/not-a-uuid").await, 400, "not a valid id");
    assert_problem(
        &api.get("/certificates/0192f1e4-7c3a-7b21-9d4e-5a6b7c8d9e0f").await,
        404,
        "not found",
    );
    assert_problem(
        &api.get("/certificates?status=bogus").await,
        400,
        "unknown certificate status",
    );
    assert_problem(
        &api.get("/certificates?expiring_before=tomorrow").await,
        400,
        "RFC 3339",
    );
    assert_problem(
        &api.post(
            "/certificates/0192f1e4-7c3a-7b21-9d4e-5a6b7c8d9e0f/revoke",
            "{}".to_owned(),
            None,
        )
        .await,
        404,
        "not found",
    );
    assert_problem(&api.get("/nope").await, 404, "no such API endpoint");

    // Still serving, and nothing was stored by any of the refused requests.
    let (status, _, page) = api.get("/certificates").await;
    assert_eq!((status, page["items"].as_array().map(Vec::len)), (200, Some(0)));
    let (_, _, jobs) = api.get("/jobs").await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0));
    let ok = api
        .post(
            "/certificates?wait=30",
            create(json!({"common_name": "fine.internal"})),
            None,
        )
        .await;
    assert_eq!((ok.0, ok.2["status"].as_str()), (201, Some("active")), "{}", ok.2);
}

#[test]
fn cli_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    for args in [
        vec!["cert", "create", "bad_name.internal"],
        vec!["cert", "get", "not-an-id"],
        vec!["cert", "revoke", "0192f1e4-7c3a-7b21-9d4e-5a6b7c8d9e0f"],
    ] {
        let output = server.cli(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    // No server at all: the message says how to point the CLI at one.
    let output = std::process::Command::new(crate::support::BIN)
        .args(["cert", "list", "--url", "http://127.0.0.1:9", "--token", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach certkeeper") && stderr.contains("CERTKEEPER_URL"),
        "{stderr}"
    );
    // A bad config file refuses to start and names the field.
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "ca:\n  key_type: dsa\n").unwrap();
    let output = std::process::Command::new(crate::support::BIN)
        .args([
            "serve",
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("ca.key_type"), "{stderr}");
}

/// Guessing tokens is throttled per client address: 20 failed attempts, then 429 with
/// `Retry-After` (for valid tokens from that address too, since the check comes before the
/// token is looked at), then one attempt per 3 s.
#[tokio::test(flavor = "multi_thread")]
async fn failed_authentications_are_throttled_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let api = Api {
        http: reqwest::Client::new(),
        url: server.url.clone(),
        token: server.token(),
    };
    let guess = |n: usize| format!("ck_guess{n}");
    for n in 0..20 {
        let (status, _, _) = api.post("/certificates", "{}".to_owned(), Some(&guess(n))).await;
        assert_eq!(status, 401, "attempt {n}");
    }
    let response = api
        .http
        .get(format!("{}/api/v1/certificates", api.url))
        .bearer_auth("ck_guess20")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry_after), "Retry-After: {retry_after}");
    let (_, content_type, body) = read(response).await;
    assert_eq!(content_type, "application/problem+json");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications"),
        "{body}"
    );
    let (status, _, _) = api.get("/certificates").await;
    assert_eq!(status, 429, "the address is throttled whatever the token");
    // Public endpoints are not throttled.
    let health = api.http.get(format!("{}/health", api.url)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let (status, _, _) = api.get("/certificates").await;
    assert_eq!(status, 200, "after Retry-After the valid token works again");
}
