//! dns-01 record providers and the propagation check.
//!
//! A [`DnsProvider`], built from its [`DnsProviderConfig`], adds and removes the TXT records of
//! dns-01 challenges: RFC 2136 dynamic updates with TSIG, an operator's exec hook, or the
//! Cloudflare API. [`PropagationCheck`] then waits until nameservers serve the value, and
//! [`resolve_challenge_target`] finds where a CNAME-delegated challenge name really lives.

mod cloudflare;
mod error;
mod exec;
mod name;
mod propagation;
mod rfc2136;
mod secret;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use cloudflare::CloudflareConfig;
pub use error::DnsError;
pub use exec::{ExecConfig, HOOK_PATH, refused_env_name};
pub use propagation::{PropagationCheck, resolve_challenge_target};
pub use rfc2136::Rfc2136Config;
pub use secret::{REDACTED, Secret};

/// One provider, chosen by the `provider` key of the configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum DnsProviderConfig {
    /// RFC 2136 dynamic update signed with TSIG.
    Rfc2136(Rfc2136Config),
    /// An external program called like lego's exec provider.
    Exec(ExecConfig),
    /// The Cloudflare v4 API.
    Cloudflare(CloudflareConfig),
}

impl DnsProviderConfig {
    /// Checks the configuration, reads any secret file, and returns the provider.
    pub fn build(&self) -> Result<DnsProvider, DnsError> {
        let backend = match self {
            Self::Rfc2136(config) => Backend::Rfc2136(config.build()?),
            Self::Exec(config) => Backend::Exec(config.build()?),
            Self::Cloudflare(config) => Backend::Cloudflare(config.build()?),
        };
        Ok(DnsProvider { backend })
    }
}

/// Writes and removes dns-01 TXT records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DnsProvider {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Rfc2136(rfc2136::Rfc2136Provider),
    Exec(exec::ExecProvider),
    Cloudflare(cloudflare::CloudflareProvider),
}

impl DnsProvider {
    /// Adds TXT `value` at `fqdn` (with or without trailing dot), keeping any other values there:
    /// the apex and wildcard authorizations of one order need two values on one name at once.
    pub async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        match &self.backend {
            Backend::Rfc2136(provider) => provider.present(fqdn, value).await,
            Backend::Exec(provider) => provider.present(fqdn, value).await,
            Backend::Cloudflare(provider) => provider.present(fqdn, value).await,
        }
    }

    /// Removes exactly TXT `value` at `fqdn`, leaving other values.
    pub async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        match &self.backend {
            Backend::Rfc2136(provider) => provider.cleanup(fqdn, value).await,
            Backend::Exec(provider) => provider.cleanup(fqdn, value).await,
            Backend::Cloudflare(provider) => provider.cleanup(fqdn, value).await,
        }
    }

    /// The provider's name for logs: `rfc2136`, `exec` or `cloudflare`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Rfc2136(_) => "rfc2136",
            Backend::Exec(_) => "exec",
            Backend::Cloudflare(_) => "cloudflare",
        }
    }

    /// The servers known to be authoritative for the records written, when the provider knows
    /// them (the RFC 2136 server); the default nameservers of a [`PropagationCheck`].
    pub fn authoritative_servers(&self) -> Option<Vec<SocketAddr>> {
        match &self.backend {
            Backend::Rfc2136(provider) => Some(vec![provider.server()]),
            Backend::Exec(_) | Backend::Cloudflare(_) => None,
        }
    }
}
