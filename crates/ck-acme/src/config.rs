//! An `acme` issuer's settings, as given in the config file or `POST /api/v1/issuers`.
//!
//! Stored as the JSON the user sent (secrets included, since the server needs them), shown
//! only through [`redact_secrets`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::AcmeFailure;

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Everything an `acme` issuer needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeIssuerConfig {
    /// Directory URL, or a preset: `letsencrypt`, `letsencrypt-staging`.
    pub directory: String,
    /// Contact address for the CA's expiry and policy mail.
    #[serde(default)]
    pub email: Option<String>,
    /// External account binding, for CAs that require one (ZeroSSL, Google, private CAs).
    #[serde(default)]
    pub eab: Option<EabConfig>,
    /// Extra trusted roots (PEM) for a private ACME CA's HTTPS endpoint.
    #[serde(default)]
    pub ca_bundle_pem: Option<String>,
    /// The challenge used unless a certificate names another.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// http-01 responder settings.
    #[serde(default)]
    pub http01: Http01Config,
    /// tls-alpn-01 responder settings.
    #[serde(default)]
    pub tls_alpn01: TlsAlpn01Config,
    /// dns-01 provider settings (required for dns-01 and for wildcards).
    #[serde(default)]
    pub dns01: Option<Dns01Config>,
    /// ACME profile name, when the CA offers profiles (e.g. Let's Encrypt `shortlived`).
    #[serde(default)]
    pub profile: Option<String>,
    /// When the CA offers several chains, take the one leading to the CA with this common
    /// name (the root, or an intermediate); otherwise the CA's default.
    #[serde(default)]
    pub preferred_chain: Option<String>,
}

/// External account binding credentials (RFC 8555 §7.3.4, HS256).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EabConfig {
    /// Key id given by the CA.
    pub kid: String,
    /// The MAC key, base64url as the CA gives it. Secret.
    pub hmac: String,
}

impl std::fmt::Debug for EabConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EabConfig")
            .field("kid", &self.kid)
            .field("hmac", &"<redacted>")
            .finish()
    }
}

/// The challenge types certkeeper answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ChallengeKind {
    /// Token served over plain HTTP on port 80 of every name.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// Self-signed certificate served with ALPN `acme-tls/1` on port 443.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// TXT record at `_acme-challenge.<name>`; the only one for wildcards.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl ChallengeKind {
    /// The RFC 8555 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http-01" => Ok(Self::Http01),
            "tls-alpn-01" => Ok(Self::TlsAlpn01),
            "dns-01" => Ok(Self::Dns01),
            other => Err(format!(
                "unknown challenge `{other}`: use http-01, tls-alpn-01 or dns-01"
            )),
        }
    }
}

/// Where the http-01 tokens are served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http01Config {
    /// Own listener address. The CA connects to port 80 of each name, so when http-01 is the
    /// issuer's default the listener runs on `0.0.0.0:80` unless this says otherwise.
    #[serde(default)]
    pub listen: Option<String>,
    /// Serve the tokens only on the API port under `/.well-known/acme-challenge/` (behind a
    /// proxy that forwards port 80 there), and start no listener of our own.
    #[serde(default)]
    pub via_api: bool,
}

/// Where the tls-alpn-01 certificates are served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsAlpn01Config {
    /// Listener address. The CA connects to port 443 of each name, so when tls-alpn-01 is the
    /// issuer's default the listener runs on `0.0.0.0:443` unless this says otherwise.
    #[serde(default)]
    pub listen: Option<String>,
}

/// dns-01: which provider writes the TXT records, and how to check they are visible.
///
/// The provider's fields sit beside these (`provider: rfc2136`, `server: …`); the provider's
/// own struct rejects unknown fields.
#[derive(Debug, Clone, Deserialize)]
pub struct Dns01Config {
    /// The provider and its settings (`provider: rfc2136 | exec | cloudflare`, …).
    #[serde(flatten)]
    pub provider: ck_dns::DnsProviderConfig,
    /// Servers asked whether the record is visible; default: the zone's authoritative servers.
    #[serde(default)]
    pub resolvers: Vec<SocketAddr>,
    /// How long to wait for the record to become visible before giving up [default: 120].
    #[serde(default = "default_propagation_timeout")]
    pub propagation_timeout_seconds: u64,
    /// Pause between visibility checks in milliseconds [default: 1000].
    #[serde(default = "default_propagation_interval")]
    pub propagation_interval_ms: u64,
}

fn default_propagation_timeout() -> u64 {
    120
}

fn default_propagation_interval() -> u64 {
    1000
}

impl Dns01Config {
    pub(crate) fn propagation_timeout(&self) -> Duration {
        Duration::from_secs(self.propagation_timeout_seconds)
    }
    pub(crate) fn propagation_interval(&self) -> Duration {
        Duration::from_millis(self.propagation_interval_ms.max(10))
    }
}

impl AcmeIssuerConfig {
    /// Parses and checks a config; the error names the field to fix.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, AcmeFailure> {
        let config: Self = serde_json::from_value(value.clone())
            .map_err(|e| AcmeFailure::local(format!("invalid acme issuer settings: {e}"), false))?;
        config.validate()?;
        Ok(config)
    }

    /// The directory URL, presets resolved.
    pub fn directory_url(&self) -> String {
        match self.directory.as_str() {
            "letsencrypt" => LETSENCRYPT.to_owned(),
            "letsencrypt-staging" => LETSENCRYPT_STAGING.to_owned(),
            other => other.to_owned(),
        }
    }

    fn validate(&self) -> Result<(), AcmeFailure> {
        let url = self.directory_url();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(AcmeFailure::local(
                format!(
                    "directory `{}` is neither a URL nor a preset: use https://… or letsencrypt, letsencrypt-staging",
                    self.directory
                ),
                false,
            ));
        }
        if let Some(email) = &self.email
            && (!email.contains('@') || email.contains(char::is_whitespace))
        {
            return Err(AcmeFailure::local(format!("email `{email}` is not an address"), false));
        }
        if let Some(eab) = &self.eab {
            decode_hmac(&eab.hmac)?;
            if eab.kid.is_empty() {
                return Err(AcmeFailure::local(
                    "eab.kid is empty: give the key id the CA issued",
                    false,
                ));
            }
        }
        if self.challenge == ChallengeKind::Dns01 && self.dns01.is_none() {
            return Err(AcmeFailure::local(
                "challenge dns-01 needs a DNS provider: give dns01.provider (rfc2136, exec or cloudflare)",
                false,
            ));
        }
        if let Some(listen) = &self.http01.listen {
            parse_listen(listen, "http01.listen")?;
        }
        if let Some(listen) = &self.tls_alpn01.listen {
            parse_listen(listen, "tls_alpn01.listen")?;
        }
        Ok(())
    }

    /// The challenge a certificate with `names` gets (its own choice, else the issuer's), or
    /// why it cannot be validated: wildcards need dns-01, and dns-01 needs a provider.
    pub fn challenge_for(&self, chosen: Option<ChallengeKind>, names: &[String]) -> Result<ChallengeKind, String> {
        let challenge = chosen.unwrap_or(self.challenge);
        if challenge == ChallengeKind::Dns01 && self.dns01.is_none() {
            return Err(
                "dns-01 needs a dns01 provider on the issuer: add one with `certkeeper issuer add acme … \
                        --dns-provider`"
                    .to_owned(),
            );
        }
        if challenge != ChallengeKind::Dns01 && names.iter().any(|n| n.starts_with("*.")) {
            return Err(format!(
                "wildcard names can only be validated with dns-01, not {}: configure dns01 on the issuer and \
                 choose challenge dns-01",
                challenge.as_str()
            ));
        }
        Ok(challenge)
    }

    /// The http-01 listener this issuer needs: when given, or when http-01 is its default.
    pub fn http01_listen(&self) -> Option<SocketAddr> {
        if self.http01.via_api {
            return None;
        }
        match &self.http01.listen {
            Some(listen) => listen.parse().ok(),
            None if self.challenge == ChallengeKind::Http01 => Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            None => None,
        }
    }

    /// The tls-alpn-01 listener this issuer needs: when given, or when tls-alpn-01 is its default.
    pub fn tls_alpn01_listen(&self) -> Option<SocketAddr> {
        match &self.tls_alpn01.listen {
            Some(listen) => listen.parse().ok(),
            None if self.challenge == ChallengeKind::TlsAlpn01 => Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            None => None,
        }
    }
}

fn parse_listen(value: &str, field: &str) -> Result<SocketAddr, AcmeFailure> {
    value.parse().map_err(|_| {
        AcmeFailure::local(
            format!("{field} `{value}` is not an address: use IP:PORT, e.g. 0.0.0.0:80"),
            false,
        )
    })
}

/// The EAB MAC key bytes; CAs hand them out base64url without padding, some padded.
pub(crate) fn decode_hmac(hmac: &str) -> Result<Vec<u8>, AcmeFailure> {
    use base64::Engine;
    let trimmed = hmac.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| {
            AcmeFailure::local(
                "eab.hmac is not base64url: paste the MAC key exactly as the CA gave it",
                false,
            )
        })
}

/// Key names whose values are secrets, wherever they appear in an issuer's settings.
const SECRET_KEYS: &[&str] = &["hmac", "tsig_secret", "api_token", "secret", "token", "password"];

/// The settings with every secret value replaced by `"<redacted>"`: what APIs and logs show.
pub fn redact_secrets(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if SECRET_KEYS.contains(&k.as_str()) && !v.is_null() {
                        serde_json::Value::String("<redacted>".to_owned())
                    } else {
                        redact_secrets(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(redact_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_validation() {
        let config = AcmeIssuerConfig::from_json(&serde_json::json!({"directory": "letsencrypt-staging"})).unwrap();
        assert_eq!(config.directory_url(), LETSENCRYPT_STAGING);
        assert_eq!(config.challenge, ChallengeKind::Http01);
        assert_eq!(config.http01_listen(), Some("0.0.0.0:80".parse().unwrap()));
        let bad = AcmeIssuerConfig::from_json(&serde_json::json!({"directory": "lets-encrypt"})).unwrap_err();
        assert!(bad.message.contains("preset"), "{}", bad.message);
        let unknown =
            AcmeIssuerConfig::from_json(&serde_json::json!({"directory": "letsencrypt", "mail": "x"})).unwrap_err();
        assert!(unknown.message.contains("unknown field"), "{}", unknown.message);
        let dns = AcmeIssuerConfig::from_json(&serde_json::json!({"directory": "letsencrypt", "challenge": "dns-01"}))
            .unwrap_err();
        assert!(dns.message.contains("dns01.provider"), "{}", dns.message);
    }

    #[test]
    fn eab_hmac_is_checked_and_never_shown() {
        let json = serde_json::json!({"directory": "https://ca.test/dir", "eab": {"kid": "k1", "hmac": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}});
        let config = AcmeIssuerConfig::from_json(&json).unwrap();
        assert!(!format!("{config:?}").contains("zWNDZM6e"));
        let shown = redact_secrets(&json).to_string();
        assert!(!shown.contains("zWNDZM6e") && shown.contains("k1"), "{shown}");
        let bad = AcmeIssuerConfig::from_json(
            &serde_json::json!({"directory": "https://ca.test/dir", "eab": {"kid": "k", "hmac": "not base64!"}}),
        )
        .unwrap_err();
        assert!(!bad.message.contains("not base64!"));
    }
}
