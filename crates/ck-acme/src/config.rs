//! An `acme` issuer's settings, as given in the config file or `POST /api/v1/issuers`.
//!
//! Settings that run a program (an `exec` DNS provider), read a server-side file (TSIG and API
//! token files, CA bundles) or bind a socket (challenge listeners) are the operator's: only the
//! config file defines them, under a name ([`OperatorCatalog`]), and an issuer added through
//! the API may only name them ([`SettingsOrigin::Api`]). Issuers of the config file itself may
//! also hold them inline.
//!
//! Stored as the JSON the user sent (secrets included, since the server needs them), shown
//! only through [`AcmeIssuerConfig::shown`], which serializes the typed settings: every
//! [`Secret`] there becomes `"[redacted]"` by its type, whatever its field is called.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ck_dns::Secret;
use serde::{Deserialize, Serialize};

use crate::AcmeFailure;

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Everything an `acme` issuer needs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeIssuerConfig {
    /// Directory URL, or a preset: `letsencrypt`, `letsencrypt-staging`.
    pub directory: String,
    /// Contact address for the CA's expiry and policy mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// External account binding, for CAs that require one (ZeroSSL, Google, private CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab: Option<EabConfig>,
    /// Extra trusted roots (PEM text, not a path) for a private ACME CA's HTTPS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_pem: Option<String>,
    /// The name of a CA bundle the config file defines (`ca_bundles`), instead of the PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The challenge used unless a certificate names another.
    #[serde(default)]
    pub challenge: ChallengeKind,
    /// http-01 responder settings.
    #[serde(default, skip_serializing_if = "Http01Config::is_default")]
    pub http01: Http01Config,
    /// tls-alpn-01 responder settings.
    #[serde(default, skip_serializing_if = "TlsAlpn01Config::is_default")]
    pub tls_alpn01: TlsAlpn01Config,
    /// dns-01 provider settings, inline (config file issuers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns01: Option<Dns01Config>,
    /// The name of a dns-01 provider the config file defines (`dns_providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// The name of challenge listeners the config file defines (`acme_solvers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<String>,
    /// ACME profile name, when the CA offers profiles (e.g. Let's Encrypt `shortlived`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// When the CA offers several chains, take the one leading to the CA with this common
    /// name (the root, or an intermediate); otherwise the CA's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_chain: Option<String>,
}

/// Where an issuer's settings come from, which decides what they may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsOrigin {
    /// The operator's config file (or a program embedding ck-acme): anything.
    ConfigFile,
    /// An API or UI caller: no program, no server-side file, no socket, except by name.
    Api,
}

/// What the operator's config file defines by name for issuers to refer to: the settings an
/// API caller must never give itself.
#[derive(Debug, Clone, Default)]
pub struct OperatorCatalog {
    /// `dns_providers`: dns-01 providers with their propagation settings.
    pub dns_providers: BTreeMap<String, Dns01Config>,
    /// `acme_solvers`: challenge listeners.
    pub solvers: BTreeMap<String, SolverConfig>,
    /// `ca_bundles`: extra roots for private ACME CAs, PEM text read from the operator's files.
    pub ca_bundles: BTreeMap<String, String>,
}

impl OperatorCatalog {
    /// Parses one `dns_providers` entry: `kind` (`rfc2136`, `exec`, `cloudflare`), the
    /// provider's settings, and `resolvers`, `propagation_timeout_seconds`,
    /// `propagation_interval_ms`. The provider is built once here, so a bad setting, a missing
    /// file or a refused `env` name stops the start.
    pub fn dns_provider_from_json(name: &str, value: &serde_json::Value) -> Result<Dns01Config, AcmeFailure> {
        let invalid = |message: String| AcmeFailure::local(format!("dns_providers.{name}: {message}"), false);
        check_name(name).map_err(invalid)?;
        let serde_json::Value::Object(map) = value else {
            return Err(invalid(
                "must be a mapping with `kind` and the provider's settings".to_owned(),
            ));
        };
        let mut map = map.clone();
        let kind = map
            .remove("kind")
            .ok_or_else(|| invalid("`kind` is missing: rfc2136, exec or cloudflare".to_owned()))?;
        if map.contains_key("provider") {
            return Err(invalid("give the provider's type as `kind`, not `provider`".to_owned()));
        }
        map.insert("provider".to_owned(), kind);
        let config: Dns01Config =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| invalid(e.to_string()))?;
        config.provider.build().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    /// Parses one `acme_solvers` entry.
    pub fn solver_from_json(name: &str, value: &serde_json::Value) -> Result<SolverConfig, AcmeFailure> {
        let invalid = |message: String| AcmeFailure::local(format!("acme_solvers.{name}: {message}"), false);
        check_name(name).map_err(invalid)?;
        let solver: SolverConfig = serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
        if solver.http01.is_none() && solver.tls_alpn01.is_none() {
            return Err(invalid("give http01.listen, tls_alpn01.listen or both".to_owned()));
        }
        if let Some(listener) = &solver.http01 {
            parse_listen(&listener.listen, &format!("acme_solvers.{name}.http01.listen"))?;
        }
        if let Some(listener) = &solver.tls_alpn01 {
            parse_listen(&listener.listen, &format!("acme_solvers.{name}.tls_alpn01.listen"))?;
        }
        Ok(solver)
    }

    fn names<T>(map: &BTreeMap<String, T>) -> String {
        if map.is_empty() {
            "none".to_owned()
        } else {
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} must be 1 to 63 lowercase letters, digits, `-` or `_`"
        ))
    }
}

/// Challenge listeners an operator defines (`acme_solvers.<name>`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SolverConfig {
    /// The http-01 listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01: Option<ListenerConfig>,
    /// The tls-alpn-01 listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_alpn01: Option<ListenerConfig>,
}

/// One listener address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `IP:PORT`.
    pub listen: String,
}

/// External account binding credentials (RFC 8555 §7.3.4, HS256).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EabConfig {
    /// Key id given by the CA.
    pub kid: String,
    /// The MAC key, base64url as the CA gives it.
    pub hmac: Secret,
}

/// The challenge types certkeeper answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http01Config {
    /// Own listener address (config file issuers only). The CA connects to port 80 of each
    /// name, so when http-01 is the default of a config file issuer without a solver, the
    /// listener runs on `0.0.0.0:80` unless this says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Serve the tokens only on the API port under `/.well-known/acme-challenge/` (behind a
    /// proxy that forwards port 80 there), and start no listener of our own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via_api: bool,
}

impl Http01Config {
    fn is_default(&self) -> bool {
        self.listen.is_none() && !self.via_api
    }
}

/// Where the tls-alpn-01 certificates are served.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsAlpn01Config {
    /// Listener address (config file issuers only). The CA connects to port 443 of each name,
    /// so when tls-alpn-01 is the default of a config file issuer without a solver, the
    /// listener runs on `0.0.0.0:443` unless this says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

impl TlsAlpn01Config {
    fn is_default(&self) -> bool {
        self.listen.is_none()
    }
}

/// dns-01: which provider writes the TXT records, and how to check they are visible.
///
/// The provider's fields sit beside these (`provider: rfc2136`, `server: …`); the provider's
/// own struct rejects unknown fields.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Dns01Config {
    /// The provider and its settings (`provider: rfc2136 | exec | cloudflare`, …).
    #[serde(flatten)]
    pub provider: ck_dns::DnsProviderConfig,
    /// Servers asked whether the record is visible; default: the zone's authoritative servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    /// Parses and checks settings a program gives itself (inline settings allowed, no names to
    /// refer to); the error names the field to fix.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, AcmeFailure> {
        Self::parse(value)?.resolve(SettingsOrigin::ConfigFile, &OperatorCatalog::default())
    }

    /// Parses settings as given, without resolving names or checking their origin: what
    /// [`AcmeIssuerConfig::shown`] shows. Refuses unknown fields.
    pub fn parse(value: &serde_json::Value) -> Result<Self, AcmeFailure> {
        serde_json::from_value(value.clone())
            .map_err(|e| AcmeFailure::local(format!("invalid acme issuer settings: {e}"), false))
    }

    /// The settings ready to run: what `origin` may not hold refused, the names of `catalog`
    /// entries replaced by their settings, and everything checked.
    pub fn resolve(&self, origin: SettingsOrigin, catalog: &OperatorCatalog) -> Result<Self, AcmeFailure> {
        if origin == SettingsOrigin::Api {
            self.refuse_operator_settings(catalog)?;
        }
        let mut resolved = self.clone();
        if let Some(name) = &self.dns_provider {
            if self.dns01.is_some() {
                return Err(AcmeFailure::local(
                    "give either dns_provider (a name) or dns01 (inline settings), not both",
                    false,
                ));
            }
            let provider = catalog.dns_providers.get(name).ok_or_else(|| {
                AcmeFailure::local(
                    format!(
                        "dns_provider `{name}` is not defined in the server's config file (dns_providers: {})",
                        OperatorCatalog::names(&catalog.dns_providers)
                    ),
                    false,
                )
            })?;
            resolved.dns01 = Some(provider.clone());
        }
        if let Some(name) = &self.solver {
            if self.http01.listen.is_some() || self.tls_alpn01.listen.is_some() {
                return Err(AcmeFailure::local(
                    "give either solver (a name) or http01.listen / tls_alpn01.listen, not both",
                    false,
                ));
            }
            let solver = catalog.solvers.get(name).ok_or_else(|| {
                AcmeFailure::local(
                    format!(
                        "solver `{name}` is not defined in the server's config file (acme_solvers: {})",
                        OperatorCatalog::names(&catalog.solvers)
                    ),
                    false,
                )
            })?;
            resolved.http01.listen = solver.http01.as_ref().map(|l| l.listen.clone());
            resolved.tls_alpn01.listen = solver.tls_alpn01.as_ref().map(|l| l.listen.clone());
        }
        if let Some(name) = &self.ca_bundle {
            if self.ca_bundle_pem.is_some() {
                return Err(AcmeFailure::local(
                    "give either ca_bundle (a name) or ca_bundle_pem (the PEM text), not both",
                    false,
                ));
            }
            let pem = catalog.ca_bundles.get(name).ok_or_else(|| {
                AcmeFailure::local(
                    format!(
                        "ca_bundle `{name}` is not defined in the server's config file (ca_bundles: {}); \
                         give the PEM text as ca_bundle_pem instead",
                        OperatorCatalog::names(&catalog.ca_bundles)
                    ),
                    false,
                )
            })?;
            resolved.ca_bundle_pem = Some(pem.clone());
        }
        resolved.validate()?;
        Ok(resolved)
    }

    /// Refuses what only the config file may hold: a DNS provider (runs a program, reads files,
    /// writes to servers of its choice), listener addresses (binds sockets), and the listener
    /// on port 80 or 443 that an issuer without a solver would otherwise get.
    fn refuse_operator_settings(&self, catalog: &OperatorCatalog) -> Result<(), AcmeFailure> {
        let refuse = |message: String| Err(AcmeFailure::local(message, false));
        if self.dns01.is_some() {
            return refuse(format!(
                "dns01 cannot be given through the API: a DNS provider runs programs, reads server files and \
                 holds credentials, so only the server's config file defines one (dns_providers); name it here \
                 with dns_provider (defined: {})",
                OperatorCatalog::names(&catalog.dns_providers)
            ));
        }
        for (field, given) in [
            ("http01.listen", &self.http01.listen),
            ("tls_alpn01.listen", &self.tls_alpn01.listen),
        ] {
            if given.is_some() {
                return refuse(format!(
                    "{field} cannot be given through the API: only the server's config file binds listeners \
                     (acme_solvers); name one here with solver (defined: {})",
                    OperatorCatalog::names(&catalog.solvers)
                ));
            }
        }
        if self.solver.is_none() {
            let needs_listener = match self.challenge {
                ChallengeKind::Http01 => !self.http01.via_api,
                ChallengeKind::TlsAlpn01 => true,
                ChallengeKind::Dns01 => false,
            };
            if needs_listener {
                return refuse(format!(
                    "challenge {} needs a listener, and only the server's config file binds listeners: name one \
                     of its acme_solvers with solver (defined: {}){}",
                    self.challenge.as_str(),
                    OperatorCatalog::names(&catalog.solvers),
                    if self.challenge == ChallengeKind::Http01 {
                        ", or set http01.via_api to serve the tokens on the API port behind a proxy"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }

    /// The settings as an API shows them: serialized by type, so every secret (EAB MAC key, TSIG
    /// secret, API token, exec environment value) is `"[redacted]"` whatever its field's name.
    pub fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({"directory": self.directory}))
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
            decode_hmac(eab.hmac.expose())?;
            if eab.kid.is_empty() {
                return Err(AcmeFailure::local(
                    "eab.kid is empty: give the key id the CA issued",
                    false,
                ));
            }
        }
        if self.challenge == ChallengeKind::Dns01 && self.dns01.is_none() {
            return Err(AcmeFailure::local(
                "challenge dns-01 needs a DNS provider: name one of the config file's dns_providers with \
                 dns_provider",
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
                "dns-01 needs a DNS provider on the issuer: name one of the config file's dns_providers \
                 with `certkeeper issuer add acme … --dns-provider <name>`"
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

    /// The http-01 listener this issuer needs: when given (inline or by its solver), or, for an
    /// issuer without a solver, when http-01 is its default.
    pub fn http01_listen(&self) -> Option<SocketAddr> {
        if self.http01.via_api {
            return None;
        }
        match &self.http01.listen {
            Some(listen) => listen.parse().ok(),
            None if self.solver.is_none() && self.challenge == ChallengeKind::Http01 => {
                Some(SocketAddr::from(([0, 0, 0, 0], 80)))
            }
            None => None,
        }
    }

    /// The tls-alpn-01 listener this issuer needs: when given (inline or by its solver), or,
    /// for an issuer without a solver, when tls-alpn-01 is its default.
    pub fn tls_alpn01_listen(&self) -> Option<SocketAddr> {
        match &self.tls_alpn01.listen {
            Some(listen) => listen.parse().ok(),
            None if self.solver.is_none() && self.challenge == ChallengeKind::TlsAlpn01 => {
                Some(SocketAddr::from(([0, 0, 0, 0], 443)))
            }
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
        assert!(dns.message.contains("dns_provider"), "{}", dns.message);
    }

    #[test]
    fn eab_hmac_is_checked_and_never_shown() {
        let json = serde_json::json!({"directory": "https://ca.test/dir", "eab": {"kid": "k1", "hmac": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}});
        let config = AcmeIssuerConfig::from_json(&json).unwrap();
        assert!(!format!("{config:?}").contains("zWNDZM6e"));
        let shown = config.shown().to_string();
        assert!(
            !shown.contains("zWNDZM6e") && shown.contains("k1") && shown.contains("[redacted]"),
            "{shown}"
        );
        let bad = AcmeIssuerConfig::from_json(
            &serde_json::json!({"directory": "https://ca.test/dir", "eab": {"kid": "k", "hmac": "not base64!"}}),
        )
        .unwrap_err();
        assert!(!bad.message.contains("not base64!"));
    }

    fn catalog() -> OperatorCatalog {
        let exec = OperatorCatalog::dns_provider_from_json(
            "hook",
            &serde_json::json!({"kind": "exec", "command": "/usr/local/bin/hook", "env": {"API_KEY": "canary-env"}}),
        )
        .unwrap();
        let solver =
            OperatorCatalog::solver_from_json("edge", &serde_json::json!({"http01": {"listen": "127.0.0.1:5002"}}))
                .unwrap();
        OperatorCatalog {
            dns_providers: BTreeMap::from([("hook".to_owned(), exec)]),
            solvers: BTreeMap::from([("edge".to_owned(), solver)]),
            ca_bundles: BTreeMap::from([("corp".to_owned(), "PEM".to_owned())]),
        }
    }

    fn api(json: serde_json::Value) -> Result<AcmeIssuerConfig, AcmeFailure> {
        AcmeIssuerConfig::parse(&json)?.resolve(SettingsOrigin::Api, &catalog())
    }

    #[test]
    fn the_api_refuses_programs_files_and_listeners() {
        let exec = api(
            serde_json::json!({"directory": "https://ca.test/dir", "challenge": "dns-01",
            "dns01": {"provider": "exec", "command": "/bin/bash", "env": {"BASH_ENV": "$(id > /tmp/x)"}}}),
        )
        .unwrap_err();
        assert!(
            exec.message.contains("dns_providers") && exec.message.contains("hook"),
            "{}",
            exec.message
        );
        let file = api(
            serde_json::json!({"directory": "https://ca.test/dir", "challenge": "dns-01",
            "dns01": {"provider": "cloudflare", "api_token_file": "/etc/shadow"}}),
        )
        .unwrap_err();
        assert!(file.message.contains("config file"), "{}", file.message);
        let listen = api(serde_json::json!({"directory": "https://ca.test/dir", "http01": {"listen": "0.0.0.0:22"}}))
            .unwrap_err();
        assert!(listen.message.contains("acme_solvers"), "{}", listen.message);
        let implied = api(serde_json::json!({"directory": "https://ca.test/dir"})).unwrap_err();
        assert!(implied.message.contains("via_api"), "{}", implied.message);
        let alpn =
            api(serde_json::json!({"directory": "https://ca.test/dir", "challenge": "tls-alpn-01"})).unwrap_err();
        assert!(alpn.message.contains("solver"), "{}", alpn.message);
        let bundle = api(
            serde_json::json!({"directory": "https://ca.test/dir", "http01": {"via_api": true},
            "ca_bundle": "/etc/ssl/private/key.pem"}),
        )
        .unwrap_err();
        assert!(bundle.message.contains("not defined"), "{}", bundle.message);
        let unknown_name = api(
            serde_json::json!({"directory": "https://ca.test/dir", "challenge": "dns-01",
            "dns_provider": "other"}),
        )
        .unwrap_err();
        assert!(unknown_name.message.contains("hook"), "{}", unknown_name.message);
    }

    #[test]
    fn names_resolve_and_are_what_is_shown() {
        let given = serde_json::json!({"directory": "https://ca.test/dir", "challenge": "dns-01",
            "dns_provider": "hook", "solver": "edge", "ca_bundle": "corp"});
        let config = api(given.clone()).unwrap();
        assert!(config.dns01.is_some());
        assert_eq!(config.http01_listen(), Some("127.0.0.1:5002".parse().unwrap()));
        assert_eq!(config.tls_alpn01_listen(), None);
        assert_eq!(config.ca_bundle_pem.as_deref(), Some("PEM"));
        let shown = AcmeIssuerConfig::parse(&given).unwrap().shown();
        assert_eq!(shown["dns_provider"], "hook");
        assert!(shown.get("dns01").is_none(), "{shown}");
        // The resolved settings, if ever shown, still hide the environment's values by type.
        let resolved = config.shown().to_string();
        assert!(
            !resolved.contains("canary-env") && resolved.contains("API_KEY"),
            "{resolved}"
        );
        // A solver-backed issuer gets no implied listener on port 80.
        let via_solver = api(
            serde_json::json!({"directory": "https://ca.test/dir", "challenge": "http-01",
            "solver": "edge"}),
        )
        .unwrap();
        assert_eq!(via_solver.http01_listen(), Some("127.0.0.1:5002".parse().unwrap()));
        let via_api =
            api(serde_json::json!({"directory": "https://ca.test/dir", "http01": {"via_api": true}})).unwrap();
        assert_eq!(via_api.http01_listen(), None);
    }

    #[test]
    fn catalog_entries_are_checked() {
        let refused = OperatorCatalog::dns_provider_from_json(
            "hook",
            &serde_json::json!({"kind": "exec", "command": "/bin/sh", "env": {"LD_PRELOAD": "/tmp/x.so"}}),
        )
        .unwrap_err();
        assert!(refused.message.contains("LD_PRELOAD"), "{}", refused.message);
        let no_kind = OperatorCatalog::dns_provider_from_json("x", &serde_json::json!({"command": "/bin/sh"}));
        assert!(no_kind.is_err());
        let bad_listen =
            OperatorCatalog::solver_from_json("edge", &serde_json::json!({"http01": {"listen": "port 80"}}));
        assert!(bad_listen.is_err());
    }
}
