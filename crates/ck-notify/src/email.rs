//! The email notifier: a plain-text message over SMTP with lettre (STARTTLS, implicit TLS, or
//! plain to a loopback relay).

use std::sync::OnceLock;
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{ConfigError, EmailConfig, SmtpSecurity, check_timeout, is_loopback_host, secret_from};
use crate::{DeliveryError, Message};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A checked email notifier.
pub(crate) struct Email {
    builder: lettre::transport::smtp::AsyncSmtpTransportBuilder,
    // Built on first use: lettre's connection pool spawns its cleanup task on the current Tokio
    // runtime, and `NotifierConfig::build` may run before there is one.
    transport: OnceLock<Transport>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
}

impl Email {
    pub(crate) fn new(config: &EmailConfig) -> Result<Self, ConfigError> {
        // An IPv6 address may come bracketed as in URLs; lettre and rustls want it bare.
        let host = config.host.trim().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/[]".contains(c)) {
            return Err(ConfigError(format!(
                "email: `host` must be a host name or IP address, not {:?}",
                config.host
            )));
        }
        let tls_parameters = || -> Result<TlsParameters, ConfigError> {
            let mut builder = TlsParameters::builder(host.to_owned());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| ConfigError(format!("email: cannot read `ca_file` {}: {e}", path.display())))?;
                let certificate = Certificate::from_pem(&pem)
                    .ok()
                    .filter(|_| pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"))
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "email: `ca_file` {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            path.display()
                        ))
                    })?;
                builder = builder.add_root_certificate(certificate);
            }
            builder
                .build_rustls()
                .map_err(|e| ConfigError(format!("email: cannot set up TLS: {}", crate::describe(&e))))
        };
        let tls = match config.security {
            SmtpSecurity::Starttls => Tls::Required(tls_parameters()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls_parameters()?),
            SmtpSecurity::None if !is_loopback_host(host) => {
                return Err(ConfigError(format!(
                    "email: `security: none` would send mail and password unencrypted to {host}; it is allowed \
                     only to a loopback host (localhost, 127.0.0.1, ::1): use `security: starttls` or `tls`"
                )));
            }
            SmtpSecurity::None if config.ca_file.is_some() => {
                return Err(ConfigError(
                    "email: `ca_file` has no effect with `security: none`: remove it or use starttls/tls".to_owned(),
                ));
            }
            SmtpSecurity::None => Tls::None,
        };
        let timeout = check_timeout("email", config.timeout_seconds)?;
        let mut builder = Transport::builder_dangerous(host)
            .port(config.effective_port())
            .tls(tls)
            .timeout(Some(timeout));
        let password = secret_from(
            "email",
            "password",
            config.password.as_ref(),
            config.password_file.as_deref(),
        )?;
        match (&config.username, password) {
            (Some(username), Some(password)) => {
                builder = builder.credentials(Credentials::new(username.clone(), password.expose().to_owned()));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError(
                    "email: `username` is set without `password` or `password_file`: set one".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "email: a password is set without `username`: set it".to_owned(),
                ));
            }
        }
        let from = parse_mailbox("from", &config.from)?;
        if config.to.is_empty() {
            return Err(ConfigError(
                "email: `to` is empty: list at least one recipient".to_owned(),
            ));
        }
        let to = config
            .to
            .iter()
            .map(|address| parse_mailbox("to", address))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            builder,
            transport: OnceLock::new(),
            from,
            to,
            timeout,
        })
    }

    pub(crate) async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let email = self.compose(message)?;
        let transport = self.transport.get_or_init(|| self.builder.clone().build());
        match tokio::time::timeout(self.timeout, transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(DeliveryError::Permanent(format!("smtp: {}", crate::describe(&e)))),
            Ok(Err(e)) => Err(DeliveryError::Transient(format!("smtp: {}", crate::describe(&e)))),
            Err(_) => Err(DeliveryError::Transient(format!(
                "smtp: no answer within {} s",
                self.timeout.as_secs()
            ))),
        }
    }

    /// The email: subject and text as given, then the event document as pretty JSON.
    fn compose(&self, message: &Message) -> Result<lettre::Message, DeliveryError> {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(crate::one_line(&message.subject, 400))
            .message_id(Some(format!("<{}@certkeeper>", message_id_part(&message.id))))
            .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION")).to_owned())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let payload = serde_json::to_string_pretty(&message.payload)
            .map_err(|e| DeliveryError::Permanent(format!("smtp: cannot encode the payload: {e}")))?;
        let mut email = builder
            .body(format!("{}\n\n{payload}\n", message.text.trim_end()))
            .map_err(|e| DeliveryError::Permanent(format!("smtp: cannot build the message: {e}")))?;
        // HeaderValue::new encodes (RFC 2047) and folds, so an odd id cannot inject headers.
        let headers = email.headers_mut();
        headers.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Certkeeper-Delivery"),
            message.id.clone(),
        ));
        headers.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Certkeeper-Event"),
            message.event.as_str().to_owned(),
        ));
        Ok(email)
    }
}

/// The left part of the Message-ID: the delivery id when it is made of safe characters (so the
/// same delivery keeps the same Message-ID across retries and mail clients can thread or dedupe),
/// else its hex form.
fn message_id_part(id: &str) -> String {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
        id.to_owned()
    } else {
        hex::encode(id)
    }
}

fn parse_mailbox(field: &str, text: &str) -> Result<Mailbox, ConfigError> {
    let invalid = |e: &dyn std::fmt::Display| {
        ConfigError(format!(
            "email: `{field}` {text:?} is not an email address ({e}): write `name@example.com` or `Name <name@example.com>`"
        ))
    };
    // One entry must be one mailbox; "a@x, b@x" would parse as several.
    let mailboxes: Mailboxes = text.parse().map_err(|e| invalid(&e))?;
    let mut iter = mailboxes.into_iter();
    match (iter.next(), iter.next()) {
        (Some(mailbox), None) => Ok(mailbox),
        _ => Err(invalid(&"one address per list entry")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_safe() {
        assert_eq!(message_id_part("0190-abc.d_e"), "0190-abc.d_e");
        assert_eq!(message_id_part("a b"), "612062");
    }

    #[test]
    fn one_mailbox_per_entry() {
        assert!(parse_mailbox("to", "ops@example.com").is_ok());
        assert!(parse_mailbox("to", "Ops <ops@example.com>").is_ok());
        assert!(parse_mailbox("to", "a@example.com, b@example.com").is_err());
        assert!(parse_mailbox("to", "not an address").is_err());
    }
}
