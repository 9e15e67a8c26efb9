//! The dns-01 side of an issuer: its record provider and the propagation check, built once
//! per account and used by every order.

use crate::{AcmeFailure, Dns01Config};

/// The dns-01 provider and the propagation check of one issuer.
#[derive(Debug)]
pub(crate) struct DnsSolver {
    pub(crate) provider: ck_dns::DnsProvider,
    pub(crate) check: ck_dns::PropagationCheck,
}

impl DnsSolver {
    pub(crate) fn new(config: &Dns01Config) -> Result<Self, AcmeFailure> {
        let provider = config
            .provider
            .build()
            .map_err(|e| AcmeFailure::local(format!("dns-01 provider settings: {e}"), false))?;
        let resolvers = Some(config.resolvers.clone()).filter(|r| !r.is_empty());
        let check =
            ck_dns::PropagationCheck::new(resolvers, config.propagation_timeout(), config.propagation_interval())
                .defaulting_to(&provider);
        Ok(Self { provider, check })
    }

    /// Where `_acme-challenge.<name>` really lives: CNAME delegations are followed.
    pub(crate) async fn challenge_target(&self, challenge_name: &str) -> Result<String, ck_dns::DnsError> {
        match self.check.nameservers() {
            Some(servers) if !servers.is_empty() => {
                match ck_dns::resolve_challenge_target(challenge_name, servers).await {
                    // A server that cannot answer now (SERVFAIL, timeout) is no proof of a
                    // delegation: write where the name is; the propagation check will tell.
                    Err(ck_dns::DnsError::CnameLookup { name, reason }) => {
                        tracing::warn!(%name, %reason, "CNAME lookup failed; writing the record at the name itself");
                        Ok(challenge_name.to_owned())
                    }
                    other => other,
                }
            }
            _ => Ok(challenge_name.to_owned()),
        }
    }
}
