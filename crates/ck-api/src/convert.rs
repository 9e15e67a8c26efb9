//! Hand-written conversions from domain types to wire types, and back for requests.

use ck_api_types as wire;
use ck_domain::{ExpiryThresholds, RenewalPolicy, RenewalTrigger};

use crate::ApiError;

pub(crate) fn certificate(cert: &ck_domain::Certificate, now: time::OffsetDateTime) -> wire::Certificate {
    wire::Certificate {
        id: cert.id.to_string(),
        name: cert.name.clone(),
        common_name: cert.common_name.clone(),
        sans: cert.sans.iter().map(ToString::to_string).collect(),
        issuer: cert.issuer_id.to_string(),
        key_type: cert.key_type.to_string(),
        key_source: cert.key_source.as_str().to_owned(),
        agent_id: cert.agent_id.clone(),
        status: cert.status_at(now).to_string(),
        current_version: cert.current_version,
        serial: cert.serial.clone(),
        fingerprint: cert.fingerprint.clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        renew_at: cert.renew_at,
        validity_days: cert.validity.whole_days(),
        renewal: renewal(&cert.renewal_policy, cert.expiry_thresholds.as_ref()),
        labels: cert.labels.as_map().clone(),
        client_auth: cert.client_auth,
        last_error: cert.last_error.clone(),
        revoked_at: cert.revoked_at,
        revocation_reason: cert.revocation_reason.map(|r| r.to_string()),
        created_at: cert.created_at,
        updated_at: cert.updated_at,
    }
}

fn renewal(policy: &RenewalPolicy, thresholds: Option<&ExpiryThresholds>) -> wire::Renewal {
    let (renew_before_days, renew_at_fraction) = match policy.trigger() {
        RenewalTrigger::DaysBeforeExpiry(days) => (Some(days), None),
        RenewalTrigger::LifetimeFraction(fraction) => (None, Some(fraction)),
    };
    wire::Renewal {
        renew_before_days,
        renew_at_fraction,
        jitter: Some(policy.jitter_fraction()),
        expiry_alert_days: thresholds.map(|t| t.days().to_vec()),
    }
}

pub(crate) fn expiry_thresholds(renewal: &wire::Renewal) -> Result<Option<ExpiryThresholds>, ApiError> {
    renewal
        .expiry_alert_days
        .clone()
        .map(ExpiryThresholds::new)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("renewal: {e}")))
}

pub(crate) fn renewal_policy(renewal: &wire::Renewal, default: RenewalPolicy) -> Result<RenewalPolicy, ApiError> {
    let trigger = match (renewal.renew_before_days, renewal.renew_at_fraction) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "renewal: give renew_before_days or renew_at_fraction, not both",
            ));
        }
        (Some(days), None) => RenewalTrigger::DaysBeforeExpiry(days),
        (None, Some(fraction)) => RenewalTrigger::LifetimeFraction(fraction),
        (None, None) => default.trigger(),
    };
    RenewalPolicy::new(trigger, renewal.jitter.unwrap_or(default.jitter_fraction()))
        .map_err(|e| ApiError::bad_request(format!("renewal: {e}")))
}

pub(crate) fn version(version: &ck_domain::CertificateVersion) -> wire::CertificateVersion {
    wire::CertificateVersion {
        version: version.version,
        serial: version.serial.clone(),
        fingerprint: version.fingerprint.clone(),
        not_before: version.not_before,
        not_after: version.not_after,
        job_id: version.job_id.to_string(),
        created_at: version.created_at,
        cert_pem: version.cert_pem.clone(),
        chain_pem: version.chain_pem.clone(),
    }
}

pub(crate) fn job(job: &ck_domain::Job) -> wire::Job {
    wire::Job {
        id: job.id.to_string(),
        kind: job.kind.to_string(),
        certificate_id: job.certificate_id.to_string(),
        state: job.state.to_string(),
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        run_after: job.run_after,
        last_error: job.last_error.clone(),
        problem: job.problem.as_deref().and_then(|p| serde_json::from_str(p).ok()),
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
    }
}

pub(crate) fn issuer(issuer: &ck_server::IssuerInfo) -> wire::Issuer {
    wire::Issuer {
        id: issuer.id.to_string(),
        kind: issuer.kind.clone(),
        not_after: issuer.not_after,
        ca_pem: issuer.ca_pem.clone(),
        directory: issuer.directory.clone(),
        account_url: issuer.account_url.clone(),
        settings: issuer.settings.clone(),
        health: issuer.health.as_ref().map(|h| wire::IssuerHealth {
            status: if h.healthy { "healthy" } else { "unhealthy" }.to_owned(),
            detail: h.detail.clone(),
            checked_at: h.checked_at,
        }),
    }
}

/// Parses a path or query value, naming the parameter in the error.
pub(crate) fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e: T::Err| ApiError::bad_request(format!("{what}: {e}")))
}

/// A page size: `default` when absent, else 1 to `max`.
pub(crate) fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("limit: {n} is not between 1 and {max}"))),
    }
}
