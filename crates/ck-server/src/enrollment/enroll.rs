//! What EST and SCEP share: issuing a certificate for a CSR that came in over an enrollment
//! protocol, within the protocol's profile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use ck_domain::{IssuanceRequest, JobState, NamePolicy};
use ck_pki::{ParsedCsr, chain_der, pem_encode};

use crate::certificates::{Certificates, NewCertificate};
use crate::{EnrollmentPolicy, ServiceError};

/// How long an enrollment waits for its certificate before answering "try later".
const ENROLL_WAIT: StdDuration = StdDuration::from_secs(30);

/// Whether an enrolled certificate keeps its CSR (for server-side renewal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepCsr {
    Yes,
    /// The CSR holds a secret (a SCEP challenge): dropped once the job has ended.
    No,
}

/// Issues a certificate for a CSR (DER) that came in over an enrollment protocol (`via`),
/// within `policy`: the same checks and job queue as `POST /certificates`, so enrolled
/// certificates are in the inventory like any other. Returns the chain, DER, leaf first.
pub(crate) async fn enroll(
    certificates: &Certificates,
    name_policy: &NamePolicy,
    csr_der: &[u8],
    policy: &EnrollmentPolicy,
    via: &str,
    keep_csr: KeepCsr,
) -> Result<Vec<Vec<u8>>, ServiceError> {
    let csr = ParsedCsr::parse(csr_der).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let names = IssuanceRequest::resolve(None, &[], Some(&csr.names), name_policy)
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
    // Checked apart from the suffixes: `*.devices.example` ends in `.devices.example`, and a
    // wildcard would let one device (all share the enrollment secret) speak for every name
    // under the suffix.
    if !policy.allow_wildcards
        && let Some(wildcard) = names.sans.iter().find(|san| san.to_string().starts_with("*."))
    {
        return Err(ServiceError::Forbidden(format!(
            "the {via} profile does not allow wildcard names ({wildcard}): ask for the device's own names, \
             or set `allow_wildcards: true` in the {via} section of the server's config file"
        )));
    }
    if !policy.allowed_suffixes.is_empty() {
        let refused: BTreeSet<String> = names
            .sans
            .iter()
            .map(ToString::to_string)
            .filter(|name| {
                !policy
                    .allowed_suffixes
                    .iter()
                    .any(|suffix| name == suffix || name.ends_with(&format!(".{suffix}")))
            })
            .collect();
        if !refused.is_empty() {
            return Err(ServiceError::Forbidden(format!(
                "the {via} profile does not allow {} (allowed: names under {})",
                refused.into_iter().collect::<Vec<_>>().join(", "),
                policy.allowed_suffixes.join(", ")
            )));
        }
    }
    let request = NewCertificate {
        csr_pem: Some(pem_encode("CERTIFICATE REQUEST", csr_der)),
        issuer: Some(policy.issuer.clone()),
        validity_days: policy.validity_days,
        labels: BTreeMap::from([("enrolled-via".to_owned(), via.to_owned())]),
        // Enrolled devices present their certificates as TLS clients (802.1X, VPN, mTLS).
        client_auth: true,
        ..NewCertificate::default()
    };
    let (cert, job) = certificates.create_certificate(request).await?;
    let job = certificates.wait_for_job(job.id, ENROLL_WAIT).await?;
    if keep_csr == KeepCsr::No && matches!(job.state, JobState::Succeeded | JobState::Failed | JobState::Cancelled) {
        certificates.forget_csr(cert.id).await?;
    }
    match job.state {
        JobState::Succeeded => {}
        JobState::Failed | JobState::Cancelled => {
            return Err(ServiceError::Invalid(format!(
                "the enrollment failed: {}",
                job.last_error.unwrap_or_default()
            )));
        }
        JobState::Pending | JobState::Running => {
            return Err(ServiceError::Unavailable(format!(
                "the certificate is not issued yet (job {}); enroll again in a moment",
                job.id
            )));
        }
    }
    let (version, _) = certificates.version(cert.id, None).await?;
    tracing::info!(certificate = %cert.id, name = %cert.name, via, "enrolled");
    chain_der(&version.cert_pem).map_err(|e| ServiceError::Unavailable(e.to_string()))
}
