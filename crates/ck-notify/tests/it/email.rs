//! The email notifier against a real SMTP server: ck-test-peers' aiosmtpd sink (Debian
//! python3-aiosmtpd) on 127.0.0.1, plain, with STARTTLS and with implicit TLS, its certificate
//! trusted through `ca_file`.

use std::time::Duration;

use ck_notify::DeliveryError;
use ck_test_peers::free_port;
use ck_test_peers::smtp::SmtpSink;

use crate::support::{message, notifier};

/// The notifier's settings for `sink`, to two recipients.
fn yaml(sink: &SmtpSink, security: &str, extra: &str) -> String {
    format!(
        "type: email\nhost: 127.0.0.1\nport: {}\nsecurity: {security}\nfrom: certkeeper <certkeeper@example.com>\n\
         to: [ops@example.com, Second <second@example.com>]\ntimeout_seconds: 10\n{extra}",
        sink.port()
    )
}

/// `ca_file: <the sink's CA>` for the TLS variants.
fn trust(sink: &SmtpSink) -> String {
    let ca_file = sink.ca_file().expect("a TLS sink has a CA file");
    format!("ca_file: {}\n", ca_file.display())
}

/// The one message `sink` accepted (it is stored before the server answers 250).
fn only_message(sink: &SmtpSink) -> serde_json::Value {
    let messages = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1, "{messages:#?}");
    messages.into_iter().next().expect("one message")
}

fn assert_is_the_message(stored: &serde_json::Value, tls: bool) {
    let message = message();
    assert_eq!(stored["subject"], message.subject);
    assert_eq!(stored["headers"]["x-certkeeper-delivery"], message.id);
    assert_eq!(stored["headers"]["x-certkeeper-event"], "renewal_failed");
    assert_eq!(stored["message_id"], format!("<{}@certkeeper>", message.id));
    assert_eq!(stored["headers"]["from"], "certkeeper <certkeeper@example.com>");
    assert_eq!(stored["from"], "certkeeper@example.com");
    assert_eq!(
        stored["to"],
        serde_json::json!(["ops@example.com", "second@example.com"])
    );
    assert_eq!(stored["content_type"], "text/plain");
    assert_eq!(stored["tls"], tls);
    let body = stored["body"].as_str().expect("body text");
    let (text, payload) = body.split_once("\n\n").expect("text, blank line, payload");
    assert_eq!(text, message.text);
    let payload: serde_json::Value = serde_json::from_str(payload).expect("the payload is JSON");
    assert_eq!(payload, message.payload);
}

#[tokio::test]
async fn plain_smtp_to_loopback_delivers_subject_id_and_payload() {
    let Some(sink) = SmtpSink::start("plain_smtp_to_loopback") else {
        return;
    };
    let email = notifier(&yaml(&sink, "none", ""));
    assert_eq!(email.kind(), "email");
    email.deliver(&message()).await.expect("delivered");
    assert_is_the_message(&only_message(&sink), false);
    // The pooled connection is reused for the next attempt.
    email.deliver(&message()).await.expect("delivered again");
    assert_eq!(sink.wait_for(2, Duration::from_secs(5)).len(), 2);
}

#[tokio::test]
async fn smtp_replies_map_to_permanent_and_transient() {
    let Some(sink) = SmtpSink::start("smtp_replies_map") else {
        return;
    };
    let rejected = notifier(&yaml(&sink, "none", "").replace("ops@example.com", "reject@example.com"));
    let error = rejected.deliver(&message()).await.expect_err("550");
    assert!(
        matches!(&error, DeliveryError::Permanent(text) if text.starts_with("smtp: ") && text.contains("550") && text.contains("no such mailbox")),
        "{error:?}"
    );
    let busy = notifier(&yaml(&sink, "none", "").replace("ops@example.com", "later@example.com"));
    let error = busy.deliver(&message()).await.expect_err("451");
    assert!(
        matches!(&error, DeliveryError::Transient(text) if text.contains("451") && text.contains("try again later")),
        "{error:?}"
    );
    assert_eq!(sink.messages().len(), 0, "{}", sink.log_text());
}

#[tokio::test]
async fn starttls_with_a_private_ca_delivers_encrypted() {
    let Some(sink) = SmtpSink::start_starttls("starttls_with_a_private_ca") else {
        return;
    };
    let email = notifier(&yaml(&sink, "starttls", &trust(&sink)));
    email.deliver(&message()).await.expect("delivered over STARTTLS");
    assert_is_the_message(&only_message(&sink), true);
}

#[tokio::test]
async fn starttls_refuses_a_certificate_it_cannot_verify() {
    let Some(sink) = SmtpSink::start_starttls("starttls_refuses_unverified") else {
        return;
    };
    // Only the webpki roots: the self-signed certificate is not trusted.
    let email = notifier(&yaml(&sink, "starttls", ""));
    let error = email.deliver(&message()).await.expect_err("untrusted certificate");
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_eq!(sink.messages().len(), 0, "{}", sink.log_text());
}

#[tokio::test]
async fn starttls_is_required_not_optional() {
    let Some(sink) = SmtpSink::start("starttls_is_required") else {
        return;
    };
    // The server offers no STARTTLS: the message must not go out in plain text.
    let email = notifier(&yaml(&sink, "starttls", ""));
    let error = email.deliver(&message()).await.expect_err("no STARTTLS offered");
    assert!(error.to_string().starts_with("smtp: "), "{error}");
    assert_eq!(sink.messages().len(), 0, "{}", sink.log_text());
}

#[tokio::test]
async fn implicit_tls_with_a_private_ca_delivers_encrypted() {
    let Some(sink) = SmtpSink::start_implicit_tls("implicit_tls_with_a_private_ca") else {
        return;
    };
    let email = notifier(&yaml(&sink, "tls", &trust(&sink)));
    email.deliver(&message()).await.expect("delivered over TLS");
    assert_is_the_message(&only_message(&sink), true);
}

#[tokio::test]
async fn a_closed_smtp_port_is_transient() {
    let yaml = format!(
        "type: email\nhost: localhost\nport: {}\nsecurity: none\nfrom: a@example.com\nto: [b@example.com]\n",
        free_port()
    );
    let error = notifier(&yaml).deliver(&message()).await.expect_err("nothing listens");
    assert!(
        error.is_transient() && error.to_string().starts_with("smtp: "),
        "{error:?}"
    );
}
