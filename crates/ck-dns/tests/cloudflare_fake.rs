//! The `cloudflare` provider against a small in-process FAKE of the Cloudflare v4 API on
//! 127.0.0.1. This is a mock, allowed only because Cloudflare is a remote paid service that tests
//! cannot reach; the fake implements just the three endpoints the provider uses, checks the
//! bearer token on every request, and answers like the real API (envelope, error codes, quoted TXT
//! content).

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ck_dns::{CloudflareConfig, DnsError, DnsProvider, DnsProviderConfig, Secret};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TOKEN: &str = "cf-test-token-7f3a9c";
const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const VALUE_ONE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const VALUE_TWO: &str = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";

#[derive(Default)]
struct FakeState {
    /// id -> (name, content)
    records: BTreeMap<String, (String, String)>,
    next_id: u32,
    /// "METHOD path?query" of every request, in order.
    requests: Vec<String>,
    /// Authorization headers seen.
    authorizations: Vec<String>,
}

struct FakeCloudflare {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeCloudflare {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move { serve_connection(stream, state).await });
            }
        });
        Self { addr, state }
    }

    fn api_base(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    fn contents(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut contents: Vec<String> = state.records.values().map(|(_, content)| content.clone()).collect();
        contents.sort();
        contents
    }
}

/// Reads one HTTP/1.1 request at a time (reqwest may keep the connection alive) and answers it.
async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<Mutex<FakeState>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (key, value) = line.split_once(':').unwrap();
            headers.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let length: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap();

        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap().to_owned();
        let target = parts.next().unwrap().to_owned();
        let authorization = headers.get("authorization").cloned().unwrap_or_default();
        let (status, answer) = route(&state, &method, &target, &authorization, &body);

        let text = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await.unwrap();
    }
}

fn route(state: &Mutex<FakeState>, method: &str, target: &str, authorization: &str, body: &[u8]) -> (u16, Value) {
    let mut state = state.lock().unwrap();
    state.requests.push(format!("{method} {target}"));
    state.authorizations.push(authorization.to_owned());
    if authorization != format!("Bearer {TOKEN}") {
        return failure(403, 9109, "Invalid access token");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = parse_query(query);
    let records_path = format!("/client/v4/zones/{ZONE_ID}/dns_records");
    match (method, path) {
        ("GET", "/client/v4/zones") => {
            let zones = if query.get("name").map(String::as_str) == Some("example.test") {
                json!([{ "id": ZONE_ID, "name": "example.test" }])
            } else {
                json!([])
            };
            success(zones)
        }
        ("POST", p) if p == records_path => {
            let record: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(record["type"], "TXT");
            let name = record["name"].as_str().unwrap().to_owned();
            let content = record["content"].as_str().unwrap().to_owned();
            if state.records.values().any(|r| *r == (name.clone(), content.clone())) {
                return failure(400, 81058, "An identical record already exists.");
            }
            state.next_id += 1;
            let id = format!("rec{}", state.next_id);
            state.records.insert(id.clone(), (name, content));
            success(json!({ "id": id }))
        }
        ("GET", p) if p == records_path => {
            let found: Vec<Value> = state
                .records
                .iter()
                .filter(|(_, (name, content))| {
                    query.get("type").map(String::as_str) == Some("TXT")
                        && query.get("name") == Some(name)
                        && query.get("content").is_none_or(|c| c == content)
                })
                // The real API may return TXT content in quotes.
                .map(|(id, (name, content))| json!({ "id": id, "name": name, "content": format!("\"{content}\"") }))
                .collect();
            success(Value::Array(found))
        }
        ("DELETE", p) if p.starts_with(&format!("{records_path}/")) => {
            let id = &p[records_path.len() + 1..];
            match state.records.remove(id) {
                Some(_) => success(json!({ "id": id })),
                None => failure(404, 81044, "Record does not exist."),
            }
        }
        _ => failure(404, 7003, "Could not route to path"),
    }
}

fn success(result: Value) -> (u16, Value) {
    (
        200,
        json!({ "success": true, "errors": [], "messages": [], "result": result }),
    )
}

fn failure(status: u16, code: u32, message: &str) -> (u16, Value) {
    (
        status,
        json!({ "success": false, "errors": [{ "code": code, "message": message }], "messages": [], "result": null }),
    )
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn provider(fake: &FakeCloudflare, token: &str, zone_id: Option<&str>) -> DnsProvider {
    DnsProviderConfig::Cloudflare(CloudflareConfig {
        api_token: Some(Secret::new(token)),
        api_token_file: None,
        zone_id: zone_id.map(str::to_owned),
        api_base: Some(fake.api_base()),
    })
    .build()
    .unwrap()
}

#[tokio::test]
async fn present_two_values_then_cleanup_one() {
    let fake = FakeCloudflare::start().await;
    let dns = provider(&fake, TOKEN, None);
    assert_eq!(dns.kind(), "cloudflare");
    let name = "_acme-challenge.www.example.test.";

    dns.present(name, VALUE_ONE).await.unwrap();
    dns.present(name, VALUE_TWO).await.unwrap();
    // A repeated present (e.g. a retried job) is accepted.
    dns.present(name, VALUE_TWO).await.unwrap();
    let mut both = vec![VALUE_ONE.to_owned(), VALUE_TWO.to_owned()];
    both.sort();
    assert_eq!(fake.contents(), both);

    dns.cleanup(name, VALUE_ONE).await.unwrap();
    assert_eq!(fake.contents(), vec![VALUE_TWO.to_owned()]);

    let state = fake.state.lock().unwrap();
    assert!(state.authorizations.iter().all(|a| *a == format!("Bearer {TOKEN}")));
    // The zone was found by walking up the name, most specific first.
    let zone_lookups: Vec<&String> = state
        .requests
        .iter()
        .filter(|r| r.starts_with("GET /client/v4/zones?"))
        .collect();
    assert_eq!(
        zone_lookups[..3],
        [
            "GET /client/v4/zones?name=_acme-challenge.www.example.test",
            "GET /client/v4/zones?name=www.example.test",
            "GET /client/v4/zones?name=example.test",
        ]
    );
    assert!(
        state
            .records
            .values()
            .all(|(n, _)| n == "_acme-challenge.www.example.test")
    );
}

#[tokio::test]
async fn a_configured_zone_id_skips_the_lookup() {
    let fake = FakeCloudflare::start().await;
    let dns = provider(&fake, TOKEN, Some(ZONE_ID));
    dns.present("_acme-challenge.example.test", VALUE_ONE).await.unwrap();
    assert_eq!(fake.contents(), vec![VALUE_ONE.to_owned()]);
    let state = fake.state.lock().unwrap();
    assert!(state.requests.iter().all(|r| !r.starts_with("GET /client/v4/zones?")));
}

#[tokio::test]
async fn a_rejected_token_is_reported_without_the_token() {
    let fake = FakeCloudflare::start().await;
    let wrong_token = "wrong-token-should-never-be-printed";
    let error = provider(&fake, wrong_token, None)
        .present("_acme-challenge.example.test", VALUE_ONE)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, DnsError::CloudflareApi { status: 403, .. }),
        "{message}"
    );
    assert!(message.contains("Invalid access token (code 9109)"), "{message}");
    assert!(!message.contains(wrong_token), "{message}");
    assert!(!format!("{error:?}").contains(wrong_token));
}

#[tokio::test]
async fn a_name_outside_every_zone_is_a_clear_error() {
    let fake = FakeCloudflare::start().await;
    let error = provider(&fake, TOKEN, None)
        .present("_acme-challenge.other.test", VALUE_ONE)
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::CloudflareZoneNotFound { .. }), "{error}");
}

#[tokio::test]
async fn the_token_can_come_from_a_file() {
    let fake = FakeCloudflare::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("cf-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let dns = DnsProviderConfig::Cloudflare(CloudflareConfig {
        api_token: None,
        api_token_file: Some(token_file),
        zone_id: None,
        api_base: Some(fake.api_base()),
    })
    .build()
    .unwrap();
    dns.present("_acme-challenge.example.test", VALUE_ONE).await.unwrap();
    assert_eq!(fake.contents(), vec![VALUE_ONE.to_owned()]);
    assert!(!format!("{dns:?}").contains(TOKEN));
}
