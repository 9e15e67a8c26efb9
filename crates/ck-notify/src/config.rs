//! Notifier settings as the server's YAML spells them, and their checks.
//!
//! Every secret is a [`Secret`] (or a file holding one), whose `Debug` is redacted, so printing a
//! config in a log or an error never shows a key, password or token.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The longest `timeout_seconds` accepted: a delivery attempt holds a worker meanwhile.
const MAX_TIMEOUT_SECONDS: u64 = 600;

/// Settings that cannot work, in one line naming the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub(crate) String);

/// A value that must never be shown: `Debug` prints `<redacted>` and there is no `Display`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Settings of one notifier, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NotifierConfig {
    /// A JSON POST to any HTTP(S) endpoint, HMAC-signed when a secret is set.
    Webhook(WebhookConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// Email through an SMTP server.
    Email(EmailConfig),
    /// A local program run without a shell.
    Command(CommandConfig),
}

// `build` is in lib.rs, next to the channels it makes: this module stays a leaf that the channel
// modules read their settings from.
impl NotifierConfig {
    /// The channel's name, as in `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Slack(_) => "slack",
            Self::Email(_) => "email",
            Self::Command(_) => "command",
        }
    }
}

fn default_http_timeout() -> u64 {
    10
}

fn default_email_timeout() -> u64 {
    30
}

fn default_command_timeout() -> u64 {
    30
}

/// Settings of a `webhook` notifier.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `http` or `https` URL to POST to (redirects are not followed).
    pub url: String,
    /// The HMAC-SHA256 key that signs each request.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file holding the key (a trailing newline is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Extra request headers, e.g. `Authorization`; their values are treated as secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Seconds an attempt may take, connection to answer.
    #[serde(default = "default_http_timeout")]
    pub timeout_seconds: u64,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Receivers often take a token in the URL's path or query: show only its origin.
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .field("secret_file", &self.secret_file)
            .field("headers", &self.headers)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// Settings of a `slack` notifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (`https://hooks.slack.com/services/…`); it is the credential.
    /// Plain `http` is accepted only to a loopback host, for tests.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file holding the URL instead.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Seconds an attempt may take.
    #[serde(default = "default_http_timeout")]
    pub timeout_seconds: u64,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (submission port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: allowed only to a loopback host (a local relay).
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// Settings of an `email` notifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its certificate) or IP address.
    pub host: String,
    /// The port; default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is protected.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The login, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// The password for `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `certkeeper <certkeeper@example.com>`.
    pub from: String,
    /// The recipients (at least one).
    pub to: Vec<String>,
    /// PEM certificates trusted besides the webpki roots, for a server with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds an attempt may take, connection to the server's final answer.
    #[serde(default = "default_email_timeout")]
    pub timeout_seconds: u64,
}

impl EmailConfig {
    /// The port in use: the configured one or the security's usual one.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.security.default_port())
    }
}

/// Settings of a `command` notifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Absolute path of the program; it runs without a shell.
    pub program: PathBuf,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds it may run before it is killed.
    #[serde(default = "default_command_timeout")]
    pub timeout_seconds: u64,
}

/// The timeout of `kind`, refused outside 1 s ..= 600 s.
pub(crate) fn check_timeout(kind: &str, seconds: u64) -> Result<Duration, ConfigError> {
    if seconds == 0 || seconds > MAX_TIMEOUT_SECONDS {
        return Err(ConfigError(format!(
            "{kind}: `timeout_seconds` must be between 1 and {MAX_TIMEOUT_SECONDS}, not {seconds}"
        )));
    }
    Ok(Duration::from_secs(seconds))
}

/// A secret given inline as `field` or in a file as `<field>_file`: at most one of them, and not
/// empty. `None` when neither is set.
pub(crate) fn secret_from(
    kind: &str,
    field: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    let secret = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{kind}: set only one of `{field}` and `{field}_file`"
            )));
        }
        (Some(secret), None) => secret.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{kind}: cannot read `{field}_file` {}: {e}", path.display())))?;
            // Editors and `echo` end files with a newline that is not part of the secret.
            Secret::new(text.trim_end_matches(['\n', '\r']))
        }
    };
    if secret.expose().is_empty() {
        return Err(ConfigError(format!("{kind}: `{field}` is empty: set it or remove it")));
    }
    Ok(Some(secret))
}

/// Whether `host` (a name or an IP address, IPv6 possibly in brackets) is this machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// `url` reduced to its scheme, host and port: what a log may show of a URL that can carry a token
/// in its user info, path or query.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", parsed.scheme()),
            (Some(host), None) => format!("{}://{host}/…", parsed.scheme()),
            (None, _) => "<url without host>".to_owned(),
        },
        Err(_) => "<invalid url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognized() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "mail.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["mail.example.com", "10.0.0.1", "localhost.example.com", "::2"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn urls_are_redacted_to_their_origin() {
        assert_eq!(
            redact_url("https://u:p@hooks.example.com/T1/B2/secret?x=1"),
            "https://hooks.example.com/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080/…");
        assert_eq!(redact_url("not a url"), "<invalid url>");
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout("webhook", 0).is_err());
        assert!(check_timeout("webhook", 601).is_err());
        assert_eq!(check_timeout("webhook", 5), Ok(Duration::from_secs(5)));
    }
}
