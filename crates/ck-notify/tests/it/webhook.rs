//! Webhook and Slack notifiers against ck-test-peers' recording HTTP receiver on 127.0.0.1.

use std::time::{Duration, Instant};

use ck_notify::{DeliveryError, verify_signature};
use ck_test_peers::free_port;
use ck_test_peers::webhook::{ReceivedRequest, Reply, WebhookReceiver};

use crate::support::{message, notifier};

fn header<'a>(request: &'a ReceivedRequest, name: &str) -> &'a str {
    request.header(name).unwrap_or_else(|| panic!("header {name} missing"))
}

#[tokio::test]
async fn signed_webhook_carries_the_envelope_and_a_verifiable_signature() {
    let receiver = WebhookReceiver::start(vec![200]);
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("hook.key");
    std::fs::write(&secret_file, "s3cr3t-hmac-key\n").expect("write the key");
    let hook = notifier(&format!(
        "type: webhook\nurl: {}/hooks/certkeeper\nsecret_file: {}\nheaders:\n  Authorization: Bearer tok-123\n",
        receiver.base_url(),
        secret_file.display()
    ));
    assert_eq!(hook.kind(), "webhook");
    let message = message();
    hook.deliver(&message).await.expect("delivered");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hooks/certkeeper");
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "x-certkeeper-event"), "renewal_failed");
    assert_eq!(header(request, "x-certkeeper-delivery"), message.id);
    assert_eq!(header(request, "authorization"), "Bearer tok-123");
    let timestamp = header(request, "x-certkeeper-timestamp");
    let sent_at: i64 = timestamp.parse().expect("Unix seconds");
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - sent_at).abs() < 60);
    let signature = header(request, "x-certkeeper-signature");
    // The trailing newline of the key file is not part of the key.
    assert!(verify_signature(
        b"s3cr3t-hmac-key",
        timestamp,
        &request.body,
        signature
    ));
    assert!(!verify_signature(
        b"s3cr3t-hmac-key\n",
        timestamp,
        &request.body,
        signature
    ));
    assert!(!verify_signature(b"s3cr3t-hmac-key", "1", &request.body, signature));

    let body = request.json();
    assert_eq!(body, message.envelope());
    assert_eq!(body["event"], "renewal_failed");
    assert_eq!(body["occurred_at"], "2026-03-01T12:34:56Z");
    assert_eq!(body["data"]["certificate"], "c-1");
}

#[tokio::test]
async fn unsigned_webhook_has_no_signature_header() {
    let receiver = WebhookReceiver::start(vec![204]);
    let hook = notifier(&format!("type: webhook\nurl: {}\n", receiver.url()));
    hook.deliver(&message()).await.expect("delivered");
    let requests = receiver.requests();
    assert_eq!((requests[0].path.as_str(), requests[0].answered), ("/hook", 204));
    assert!(requests[0].header("x-certkeeper-signature").is_none());
    assert!(requests[0].header("x-certkeeper-timestamp").is_some());
}

#[tokio::test]
async fn answers_map_to_transient_or_permanent() {
    let cases: [(u16, &str, bool, &str); 7] = [
        (
            500,
            "database down",
            true,
            "webhook answered 500 Internal Server Error: database down",
        ),
        (503, "", true, "webhook answered 503 Service Unavailable"),
        (408, "", true, "408"),
        (429, "slow down", true, "429 Too Many Requests: slow down"),
        (
            400,
            "{\"error\": \"bad payload\"}",
            false,
            "webhook answered 400 Bad Request: {\"error\": \"bad payload\"}",
        ),
        (404, "", false, "404 Not Found"),
        (410, "", false, "410 Gone"),
    ];
    for (status, body, transient, expected) in cases {
        let receiver = WebhookReceiver::with(vec![Reply::status(status).body(body)]);
        let hook = notifier(&format!("type: webhook\nurl: {}/h\nsecret: k\n", receiver.base_url()));
        let error = hook.deliver(&message()).await.expect_err("a non-2xx answer fails");
        assert_eq!(error.is_transient(), transient, "{status}: {error:?}");
        assert!(error.to_string().contains(expected), "{status}: {error}");
    }
}

#[tokio::test]
async fn a_failed_delivery_and_its_retry_share_a_kept_alive_connection() {
    let receiver = WebhookReceiver::start(vec![500]);
    let hook = notifier(&format!("type: webhook\nurl: {}\nsecret: k\n", receiver.url()));
    let error = hook.deliver(&message()).await.expect_err("scripted 500");
    assert!(error.is_transient(), "{error:?}");
    hook.deliver(&message()).await.expect("200 after the script");
    let requests = receiver.wait_for(2, Duration::from_secs(5));
    assert_eq!(requests.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 200]);
    // reqwest kept the connection after the 500: the answer's length and keep-alive were right.
    assert_eq!(requests[0].connection, requests[1].connection, "{requests:#?}");
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn long_error_bodies_are_cut() {
    let receiver = WebhookReceiver::with(vec![Reply::status(500).body("x".repeat(5000))]);
    let hook = notifier(&format!("type: webhook\nurl: {}/h\n", receiver.base_url()));
    let error = hook.deliver(&message()).await.expect_err("500");
    let text = error.to_string();
    assert!(text.len() < 300, "{} bytes: {text}", text.len());
    assert!(text.ends_with('…'), "{text}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = WebhookReceiver::with(vec![
        Reply::status(302)
            .body("")
            .header("Location", "https://new.example.com/hook?token=abc"),
    ]);
    let hook = notifier(&format!("type: webhook\nurl: {}/h\n", receiver.base_url()));
    let error = hook.deliver(&message()).await.expect_err("3xx fails");
    assert!(matches!(error, DeliveryError::Permanent(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("webhook redirected to https://new.example.com/hook") && text.contains("configure the final URL"),
        "{text}"
    );
    assert!(!text.contains("token=abc"), "{text}");
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_closed_port_is_transient() {
    let hook = notifier(&format!(
        "type: webhook\nurl: http://127.0.0.1:{}/h?token=abc\n",
        free_port()
    ));
    let error = hook.deliver(&message()).await.expect_err("nothing listens");
    assert!(error.is_transient(), "{error:?}");
    let text = error.to_string();
    assert!(text.starts_with("webhook: "), "{text}");
    assert!(!text.contains("token=abc") && !text.contains("127.0.0.1"), "{text}");
}

#[tokio::test]
async fn a_slow_receiver_times_out_as_transient() {
    let receiver = WebhookReceiver::with(vec![Reply::status(200).delay(Duration::from_secs(5))]);
    let hook = notifier(&format!(
        "type: webhook\nurl: {}/h\ntimeout_seconds: 1\n",
        receiver.base_url()
    ));
    let started = Instant::now();
    let error = hook.deliver(&message()).await.expect_err("too slow");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(
        error,
        DeliveryError::Transient("webhook: no answer within 1 s".to_owned())
    );
}

#[tokio::test]
async fn slack_gets_subject_and_text_escaped() {
    let receiver = WebhookReceiver::start(vec![200]);
    let slack = notifier(&format!(
        "type: slack\nurl: {}/services/T1/B2/sekrit\n",
        receiver.base_url()
    ));
    assert_eq!(slack.kind(), "slack");
    let mut message = message();
    message.text = "CA said <nope> & gave up".to_owned();
    slack.deliver(&message).await.expect("delivered");
    let requests = receiver.requests();
    assert_eq!(requests[0].path, "/services/T1/B2/sekrit");
    assert_eq!(
        requests[0].json()["text"],
        "certkeeper: renewal of www.example.com failed\nCA said &lt;nope&gt; &amp; gave up"
    );
}

#[tokio::test]
async fn slack_errors_keep_the_body_and_never_the_url() {
    for (status, body, transient) in [
        (403, "invalid_token", false),
        (404, "no_team", false),
        (429, "", true),
        (500, "", true),
    ] {
        let receiver = WebhookReceiver::with(vec![Reply::status(status).body(body)]);
        let slack = notifier(&format!(
            "type: slack\nurl: {}/services/T1/B2/sekrit\n",
            receiver.base_url()
        ));
        let error = slack.deliver(&message()).await.expect_err("non-2xx");
        assert_eq!(error.is_transient(), transient, "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("slack answered {status}")) && text.contains(body),
            "{text}"
        );
        assert!(!text.contains("sekrit"), "{text}");
    }
    let slack = notifier(&format!(
        "type: slack\nurl: http://127.0.0.1:{}/services/T1/B2/sekrit\n",
        free_port()
    ));
    let error = slack.deliver(&message()).await.expect_err("closed port");
    assert!(
        error.is_transient() && !error.to_string().contains("sekrit"),
        "{error:?}"
    );
}
