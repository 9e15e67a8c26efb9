//! Shared test helpers: a sample message and YAML-built notifiers. The peers (SMTP sink, webhook
//! receiver) come from ck-test-peers, shared with other crates' end-to-end tests.

use ck_notify::{Message, Notifier, NotifierConfig};

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
