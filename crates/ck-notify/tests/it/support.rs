//! Shared test helpers: a sample message, YAML-built notifiers and a recording HTTP receiver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ck_notify::{Message, Notifier, NotifierConfig};

/// Whether a missing peer must fail the test instead of skipping it (as scripts/test.sh sets).
pub(crate) fn peers_required() -> bool {
    std::env::var_os("CERTKEEPER_REQUIRE_PEERS").is_some() || std::env::var_os("CI").is_some()
}

pub(crate) fn message() -> Message {
    Message {
        id: "0190f0a4-7c1e-7d3a-9a55-3b2c1d0e4f5a".to_owned(),
        event: ck_domain::EventKind::RenewalFailed,
        occurred_at: time::macros::datetime!(2026-03-01 12:34:56 UTC),
        subject: "certkeeper: renewal of www.example.com failed".to_owned(),
        text: "The renewal of www.example.com failed: the CA answered 503.\nNext attempt in 10 minutes.".to_owned(),
        payload: serde_json::json!({
            "certificate": "c-1",
            "names": ["www.example.com"],
            "error": "urn:ietf:params:acme:error:serverInternal",
        }),
    }
}

pub(crate) fn config(yaml: &str) -> NotifierConfig {
    yaml_serde::from_str(yaml).unwrap_or_else(|e| panic!("invalid test YAML: {e}\n{yaml}"))
}

pub(crate) fn notifier(yaml: &str) -> Notifier {
    config(yaml)
        .build()
        .unwrap_or_else(|e| panic!("build failed: {e}\n{yaml}"))
}

/// A port on 127.0.0.1 with nothing listening.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What the receiver answers every request with.
#[derive(Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) location: Option<String>,
    pub(crate) delay: Duration,
}

impl Answer {
    pub(crate) fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            location: None,
            delay: Duration::ZERO,
        }
    }
}

struct Shared {
    answer: Answer,
    requests: Mutex<Vec<Recorded>>,
    count: AtomicUsize,
}

/// An HTTP server on 127.0.0.1 that records each request and gives a fixed answer; stops when
/// dropped.
pub(crate) struct Receiver {
    pub(crate) base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(answer: Answer) -> Self {
        let shared = Arc::new(Shared {
            answer,
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(record).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let base = format!("http://{}", listener.local_addr().expect("receiver address"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver runs");
        });
        Self { base, shared, task }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(shared): State<Arc<Shared>>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    shared.count.fetch_add(1, Ordering::SeqCst);
    shared.requests.lock().expect("requests lock").push(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let answer = &shared.answer;
    tokio::time::sleep(answer.delay).await;
    let status = StatusCode::from_u16(answer.status).expect("valid status");
    let mut response = (status, answer.body.clone()).into_response();
    if let Some(location) = &answer.location {
        response
            .headers_mut()
            .insert("location", location.parse().expect("valid location"));
    }
    response
}
