//! Notifiers: tell people what happened, through one channel each.
//!
//! A [`NotifierConfig`] (deserialized from the server's YAML) is checked once by
//! [`NotifierConfig::build`], which reads secret files and yields a [`Notifier`]; the control plane
//! then calls [`Notifier::deliver`] once per attempt. Routing, storage and retries are the control
//! plane's: this crate only says whether an attempt failed in a way worth retrying
//! ([`DeliveryError::Transient`]) or not ([`DeliveryError::Permanent`]).
//!
//! Channels: a signed JSON webhook, a Slack incoming webhook, email over SMTP (lettre, STARTTLS
//! by default) and a local command. Secrets (HMAC keys, passwords, Slack URLs, header values)
//! never appear in `Debug` output or in error messages.
//!
//! # Webhook requests
//!
//! A webhook receives `POST` with `Content-Type: application/json` and the body
//! [`Message::envelope`], plus these headers:
//!
//! - `X-Certkeeper-Event`: the event kind, e.g. `renewal_failed`;
//! - `X-Certkeeper-Delivery`: the delivery id, the same on every retry of one message, so a
//!   receiver that already processed it can answer 2xx and do nothing;
//! - `X-Certkeeper-Timestamp`: when this attempt was sent, in Unix seconds;
//! - `X-Certkeeper-Signature: sha256=<hex>` when a `secret` is configured: the lowercase hex
//!   HMAC-SHA256, keyed with the secret's bytes, of `<timestamp>.<body>` (the timestamp header's
//!   digits, a dot, then the raw body bytes).
//!
//! A receiver recomputes the signature over the bytes it received (before parsing the JSON) and
//! compares in constant time ([`verify_signature`] does both; [`sign_webhook`] makes the header), then rejects timestamps more than
//! a few minutes away from its clock. Because the timestamp is signed, a captured request cannot
//! be replayed later under a fresh timestamp.

mod command;
mod config;
mod email;
mod webhook;

use std::sync::Arc;

pub use config::{
    CommandConfig, ConfigError, EmailConfig, NotifierConfig, Secret, SlackConfig, SmtpSecurity, WebhookConfig,
};
pub use webhook::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook, verify_signature};

/// How many characters of a peer's answer (HTTP body, stderr) an error message carries.
const EXCERPT_CHARS: usize = 200;

/// One message to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The delivery id, stable across retries: receivers dedupe by it.
    pub id: String,
    /// What happened.
    pub event: ck_domain::EventKind,
    /// When it happened.
    pub occurred_at: time::OffsetDateTime,
    /// One line, e.g. "certkeeper: renewal of www.example.com failed".
    pub subject: String,
    /// Plain-text body, a few lines.
    pub text: String,
    /// The event document (a JSON object).
    pub payload: serde_json::Value,
}

impl Message {
    /// The JSON document that webhooks POST and commands read on stdin:
    /// `{"id", "event", "occurred_at" (RFC 3339), "subject", "text", "data"}`.
    pub fn envelope(&self) -> serde_json::Value {
        let occurred_at = self
            .occurred_at
            .format(&time::format_description::well_known::Rfc3339)
            // Only years beyond 9999 fail; a number still tells the receiver when.
            .unwrap_or_else(|_| self.occurred_at.unix_timestamp().to_string());
        serde_json::json!({
            "id": self.id,
            "event": self.event.as_str(),
            "occurred_at": occurred_at,
            "subject": self.subject,
            "text": self.text,
            "data": self.payload,
        })
    }
}

/// Why one delivery attempt failed. The text names the cause and never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again later (network error, timeout, HTTP 5xx/408/429, SMTP 4xx, command exit
    /// != 0 or timeout).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (HTTP 4xx other than 408/429, SMTP 5xx, bad address, program not found).
    #[error("{0}")]
    Permanent(String),
}

impl DeliveryError {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// A ready notifier: holds its HTTP client or SMTP transport. Cheap to clone. Deliver from one
/// Tokio runtime: the email transport's connection pool lives on the runtime of the first delivery.
#[derive(Clone)]
pub struct Notifier {
    channel: Arc<Channel>,
}

enum Channel {
    Webhook(webhook::Webhook),
    Slack(webhook::Slack),
    Email(email::Email),
    Command(command::Command),
}

impl Notifier {
    fn new(channel: Channel) -> Self {
        Self {
            channel: Arc::new(channel),
        }
    }

    /// The channel's name: "webhook", "slack", "email" or "command".
    pub fn kind(&self) -> &'static str {
        match *self.channel {
            Channel::Webhook(_) => "webhook",
            Channel::Slack(_) => "slack",
            Channel::Email(_) => "email",
            Channel::Command(_) => "command",
        }
    }

    /// Makes one attempt at delivering `message`.
    pub async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let result = match &*self.channel {
            Channel::Webhook(webhook) => webhook.deliver(message).await,
            Channel::Slack(slack) => slack.deliver(message).await,
            Channel::Email(email) => email.deliver(message).await,
            Channel::Command(command) => command.deliver(message).await,
        };
        match &result {
            Ok(()) => tracing::debug!(kind = self.kind(), id = %message.id, "notification delivered"),
            Err(error) => tracing::debug!(kind = self.kind(), id = %message.id, %error, "notification failed"),
        }
        result
    }
}

// Here rather than in config.rs, which the channel modules read their settings from: so the
// dependencies between the modules point one way (channels -> config), without a cycle.
impl NotifierConfig {
    /// Checks the settings and reads secret files.
    pub fn build(&self) -> Result<Notifier, ConfigError> {
        let channel = match self {
            Self::Webhook(config) => Channel::Webhook(webhook::Webhook::new(config)?),
            Self::Slack(config) => Channel::Slack(webhook::Slack::new(config)?),
            Self::Email(config) => Channel::Email(email::Email::new(config)?),
            Self::Command(config) => Channel::Command(command::Command::new(config)?),
        };
        Ok(Notifier::new(channel))
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The channels hold secrets (keys, passwords, URLs with tokens): show only what kind it is.
        f.debug_struct("Notifier")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// `text` on one line (control characters and runs of whitespace become one space), cut to at
/// most `max` characters: what a peer said, fit for an error message and a log line.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        for c in (count > 0).then_some(' ').into_iter().chain(word.chars()) {
            if count == max {
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

/// An error and its causes joined by ": " (causes already in the text are not repeated), on one
/// bounded line.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // Wrappers that print their own kind and then their source's ("Connection error: Connection
    // error: …") say it twice.
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    one_line(&parts.join(": "), 2 * EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_whitespace_and_truncates() {
        assert_eq!(one_line("  a\n\tb\r\n c ", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("ééé", 3), "ééé");
    }

    #[test]
    fn describe_joins_causes_once() {
        let inner = std::io::Error::other("Connection refused");
        let outer = std::io::Error::other(format!("Connection error: Connection error: {inner}"));
        assert_eq!(describe(&outer), "Connection error: Connection refused");
    }

    #[test]
    fn notifier_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Notifier>();
    }

    #[test]
    fn envelope_carries_every_field() {
        let message = Message {
            id: "d-1".into(),
            event: ck_domain::EventKind::RenewalFailed,
            occurred_at: time::macros::datetime!(2026-03-01 12:00:00 UTC),
            subject: "s".into(),
            text: "t".into(),
            payload: serde_json::json!({"certificate": "c-1"}),
        };
        assert_eq!(
            message.envelope(),
            serde_json::json!({
                "id": "d-1",
                "event": "renewal_failed",
                "occurred_at": "2026-03-01T12:00:00Z",
                "subject": "s",
                "text": "t",
                "data": {"certificate": "c-1"},
            })
        );
    }
}
