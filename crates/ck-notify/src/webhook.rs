//! Webhook and Slack notifiers: one HTTP POST per attempt.
//!
//! The webhook request and its signature scheme are described in the crate documentation
//! ("Webhook requests"); [`sign_webhook`] makes the signature header's value and [`verify_signature`]
//! checks one, for receivers written in Rust and for tests.

use std::time::Duration;

use aws_lc_rs::hmac;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};

use crate::config::{ConfigError, Secret, SlackConfig, WebhookConfig, check_timeout, is_loopback_host, secret_from};
use crate::{DeliveryError, EXCERPT_CHARS, Message, one_line};

/// The event kind header, e.g. `renewal_failed`.
pub const EVENT_HEADER: &str = "x-certkeeper-event";
/// The delivery id header, stable across retries.
pub const DELIVERY_HEADER: &str = "x-certkeeper-delivery";
/// The Unix time (seconds) of the attempt, covered by the signature.
pub const TIMESTAMP_HEADER: &str = "x-certkeeper-timestamp";
/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-certkeeper-signature";

/// How much of an error answer's body is read: enough for its first [`EXCERPT_CHARS`] characters.
const MAX_BODY_READ: usize = 4 * EXCERPT_CHARS;

/// The `X-Certkeeper-Signature` value of `body` sent at `timestamp` (Unix seconds, as sent in
/// `X-Certkeeper-Timestamp`): `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`.
pub fn sign_webhook(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    format!("sha256={}", hex::encode(context.sign().as_ref()))
}

/// Whether `header` (an `X-Certkeeper-Signature` value) signs `body` sent at `timestamp` under
/// `secret`. The comparison takes constant time. Checking that `timestamp` is recent is the
/// caller's part.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    hmac::verify(&key, &signed, &tag).is_ok()
}

/// A checked webhook.
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Option<Secret>,
    headers: HeaderMap,
    timeout: Duration,
}

impl Webhook {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, ConfigError> {
        let url = parse_url("webhook", "url", &config.url, false)?;
        let secret = secret_from(
            "webhook",
            "secret",
            config.secret.as_ref(),
            config.secret_file.as_deref(),
        )?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError(format!("webhook: `headers` has an invalid header name {name:?}")))?;
            if header.as_str().starts_with("x-certkeeper-")
                || [CONTENT_TYPE, reqwest::header::CONTENT_LENGTH, reqwest::header::HOST].contains(&header)
            {
                return Err(ConfigError(format!(
                    "webhook: `headers` may not set {name}: certkeeper sets it; remove it"
                )));
            }
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                ConfigError(format!(
                    "webhook: the value of header {name} is not a valid header value (no control characters)"
                ))
            })?;
            // Keeps the value out of HTTP/2 header compression tables and reqwest's Debug.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let timeout = check_timeout("webhook", config.timeout_seconds)?;
        Ok(Self {
            client: http_client("webhook", timeout)?,
            url,
            secret,
            headers,
            timeout,
        })
    }

    pub(crate) async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&message.envelope())
            .map_err(|e| DeliveryError::Permanent(format!("webhook: cannot encode the message: {e}")))?;
        let delivery = HeaderValue::from_str(&message.id)
            .map_err(|_| DeliveryError::Permanent("webhook: the delivery id is not a valid header value".to_owned()))?;
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, message.event.as_str())
            .header(DELIVERY_HEADER, delivery)
            .header(TIMESTAMP_HEADER, &timestamp);
        if let Some(secret) = &self.secret {
            request = request.header(
                SIGNATURE_HEADER,
                sign_webhook(secret.expose().as_bytes(), &timestamp, &body),
            );
        }
        send("webhook", request.body(body), self.timeout).await
    }
}

/// A checked Slack incoming webhook.
pub(crate) struct Slack {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

impl Slack {
    pub(crate) fn new(config: &SlackConfig) -> Result<Self, ConfigError> {
        let url = secret_from("slack", "url", config.url.as_ref(), config.url_file.as_deref())?
            .ok_or_else(|| ConfigError("slack: set `url` (the incoming webhook URL) or `url_file`".to_owned()))?;
        let url = parse_url("slack", "url", url.expose(), true)?;
        let timeout = check_timeout("slack", config.timeout_seconds)?;
        Ok(Self {
            client: http_client("slack", timeout)?,
            url,
            timeout,
        })
    }

    pub(crate) async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let text = slack_escape(&format!("{}\n{}", message.subject, message.text));
        let request = self
            .client
            .post(self.url.clone())
            .json(&serde_json::json!({ "text": text }));
        send("slack", request, self.timeout).await
    }
}

/// Escapes the three characters Slack reads as markup (`<@U123>`, `<!channel>`, `&lt;`), so a
/// certificate name or CA error cannot ping people or render as a link.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` as an `http(s)` URL with a host. With `https_only`, plain `http` is accepted only to a
/// loopback host. Errors never repeat the URL: it may hold a token.
fn parse_url(kind: &str, field: &str, text: &str, https_only: bool) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| ConfigError(format!("{kind}: `{field}` is not a valid URL ({e})")))?;
    let host = url
        .host_str()
        .ok_or_else(|| ConfigError(format!("{kind}: `{field}` has no host")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if !https_only || is_loopback_host(host) => Ok(url),
        "http" => Err(ConfigError(format!(
            "{kind}: `{field}` must use https (plain http only to a loopback host)"
        ))),
        scheme => Err(ConfigError(format!(
            "{kind}: `{field}` must be an http or https URL, not {scheme}:"
        ))),
    }
}

fn http_client(kind: &str, timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        // A redirect would resend a signed body somewhere the operator did not configure.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            ConfigError(format!(
                "{kind}: cannot set up the HTTP client: {}",
                crate::describe(&e)
            ))
        })
}

/// Sends `request` and classifies the answer: 2xx delivered, 3xx/4xx permanent except 408 and 429,
/// everything else (5xx, network, timeout) transient.
async fn send(kind: &str, request: reqwest::RequestBuilder, timeout: Duration) -> Result<(), DeliveryError> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Err(DeliveryError::Transient(format!(
                "{kind}: no answer within {} s",
                timeout.as_secs()
            )));
        }
        // without_url: the URL may carry a token (always so for Slack).
        Err(e) => {
            return Err(DeliveryError::Transient(format!(
                "{kind}: {}",
                crate::describe(&e.without_url())
            )));
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .map_or_else(|| "nowhere (no Location)".to_owned(), location_for_humans);
        return Err(DeliveryError::Permanent(format!(
            "{kind} redirected to {location} ({status}): configure the final URL"
        )));
    }
    let excerpt = body_excerpt(response).await;
    let text = if excerpt.is_empty() {
        format!("{kind} answered {status}")
    } else {
        format!("{kind} answered {status}: {excerpt}")
    };
    let retry_may_help =
        !status.is_client_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    Err(if retry_may_help {
        DeliveryError::Transient(text)
    } else {
        DeliveryError::Permanent(text)
    })
}

/// A redirect target without its query (which may carry a token), cut to a readable length.
fn location_for_humans(location: &str) -> String {
    let without_query = location.split(['?', '#']).next().unwrap_or_default();
    one_line(without_query, EXCERPT_CHARS)
}

/// The start of an answer's body on one line, reading no more than needed.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    one_line(&String::from_utf8_lossy(&bytes), EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_secret_timestamp_and_body() {
        let header = sign_webhook(b"key", "1700000000", b"{\"a\":1}");
        assert!(header.starts_with("sha256=") && header.len() == 7 + 64);
        assert!(verify_signature(b"key", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify_signature(b"other", "1700000000", b"{\"a\":1}", &header));
        assert!(!verify_signature(b"key", "1700000001", b"{\"a\":1}", &header));
        assert!(!verify_signature(b"key", "1700000000", b"{\"a\":2}", &header));
        assert!(!verify_signature(b"key", "1700000000", b"{\"a\":1}", "sha256=zz"));
        assert!(!verify_signature(b"key", "1700000000", b"{\"a\":1}", &header[7..]));
    }

    #[test]
    fn slack_markup_is_escaped() {
        assert_eq!(slack_escape("<!channel> a&b > c"), "&lt;!channel&gt; a&amp;b &gt; c");
    }

    #[test]
    fn urls_are_checked_without_repeating_them() {
        assert!(parse_url("slack", "url", "https://hooks.slack.com/services/T/B/x", true).is_ok());
        assert!(parse_url("slack", "url", "http://127.0.0.1:9/x", true).is_ok());
        let error = parse_url("slack", "url", "http://hooks.slack.com/services/T/B/token", true).expect_err("http");
        assert!(!error.0.contains("token"), "{error}");
        assert!(parse_url("webhook", "url", "http://example.com/x", false).is_ok());
        assert!(parse_url("webhook", "url", "ftp://example.com/x", false).is_err());
        assert!(parse_url("webhook", "url", "example.com/x", false).is_err());
    }

    #[test]
    fn redirect_targets_lose_their_query() {
        assert_eq!(
            location_for_humans("https://new.example.com/hook?token=abc"),
            "https://new.example.com/hook"
        );
    }
}
