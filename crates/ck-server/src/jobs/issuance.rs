//! Turning one claimed job into a signed version: CPU work only, run on blocking threads.

use ck_domain::{Certificate, KeySource, leaf_validity};
use ck_pki::{LeafProfile, LocalCa, ParsedCsr, ServerKey};
use ck_store::NewVersion;
use time::{Duration, OffsetDateTime};

/// Why an issuance attempt failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub(crate) struct IssueFailure {
    pub(crate) message: String,
    pub(crate) transient: bool,
}

impl IssueFailure {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

/// Signs a new version of `cert` with `ca` at `now`. `jitter_sample` places the renewal time.
pub(crate) fn issue(
    ca: &LocalCa,
    cert: &Certificate,
    max_validity: Duration,
    now: OffsetDateTime,
    jitter_sample: f64,
) -> Result<(NewVersion, OffsetDateTime), IssueFailure> {
    let (public_key_der, csr_pem, private_key_pem) = match cert.key_source {
        // An agent's job runs only once its CSR is stored (the worker defers it until then).
        KeySource::Csr | KeySource::Agent => {
            let csr_pem = cert
                .csr_pem
                .as_deref()
                .ok_or_else(|| IssueFailure::permanent("the stored CSR is missing"))?;
            let csr =
                ParsedCsr::parse_stored(csr_pem.as_bytes()).map_err(|e| IssueFailure::permanent(e.to_string()))?;
            (csr.public_key_der, csr.pem, None)
        }
        KeySource::Server => {
            let key =
                ServerKey::generate(cert.key_type, &cert.sans).map_err(|e| IssueFailure::permanent(e.to_string()))?;
            (
                key.public_key_der,
                key.csr_pem,
                Some(key.private_key.expose().to_owned()),
            )
        }
    };
    let (not_before, not_after) = leaf_validity(now, cert.validity, max_validity, ca.not_after())
        .map_err(|e| IssueFailure::permanent(e.to_string()))?;
    if not_after <= now {
        return Err(IssueFailure::permanent("the issuing CA has expired; create a new CA"));
    }
    let profile = LeafProfile {
        common_name: cert.common_name.clone(),
        sans: cert.sans.clone(),
        not_before,
        not_after,
        client_auth: cert.client_auth,
    };
    let issued = ca
        .sign(&public_key_der, &profile)
        .map_err(|e| IssueFailure::permanent(e.to_string()))?;
    let renew_at = cert
        .renewal_policy
        .renew_at(issued.not_before, issued.not_after, jitter_sample);
    let version = NewVersion {
        serial: issued.serial,
        fingerprint: issued.fingerprint,
        cert_pem: issued.cert_pem,
        chain_pem: issued.chain_pem,
        csr_pem,
        private_key_pem,
        not_before: issued.not_before,
        not_after: issued.not_after,
    };
    Ok((version, renew_at))
}
