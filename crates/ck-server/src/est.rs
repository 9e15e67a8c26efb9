//! EST enrollment (RFC 7030) over the local CA: HTTP Basic with an enrollment secret, bounded
//! by a profile (allowed names, lifetime); the CSR goes through the same checks and job queue as
//! `POST /certificates`, so enrolled certificates are in the inventory like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use ck_domain::{IssuanceRequest, IssuerId, JobState};
use ck_pki::{ParsedCsr, certs_only_pkcs7, chain_der, decode_est_body, pem_block_der, pem_encode};

use crate::issuers::Issuer;
use crate::{ControlPlane, EnrollmentPolicy, EstProfile, NewCertificate, ServiceError};

/// How long an enrollment waits for its certificate before answering "try later".
const ENROLL_WAIT: StdDuration = StdDuration::from_secs(30);

/// Whether an enrolled certificate keeps its CSR (for server-side renewal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepCsr {
    Yes,
    /// The CSR holds a secret (a SCEP challenge): dropped once the job has ended.
    No,
}

impl ControlPlane {
    fn est_profile(&self) -> Result<&EstProfile, ServiceError> {
        self.inner.config.est.as_ref().ok_or_else(|| {
            ServiceError::NotFound("EST (it is off: configure `est:` in the server's config file)".to_owned())
        })
    }

    /// Whether these HTTP Basic credentials may enroll. Compared in constant time.
    pub fn est_credentials_ok(&self, username: &str, password: &str) -> Result<bool, ServiceError> {
        let profile = self.est_profile()?;
        let user_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            ck_pki::sha256_hex(username.as_bytes()).as_bytes(),
            ck_pki::sha256_hex(profile.username.as_bytes()).as_bytes(),
        )
        .is_ok();
        let password_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            ck_pki::sha256_hex(password.as_bytes()).as_bytes(),
            ck_pki::sha256_hex(profile.password.as_bytes()).as_bytes(),
        )
        .is_ok();
        Ok(user_ok & password_ok)
    }

    /// `/cacerts`: the issuing CA's root and intermediate, certs-only PKCS#7 (DER).
    pub fn est_cacerts(&self) -> Result<Vec<u8>, ServiceError> {
        let profile = self.est_profile()?;
        let id: IssuerId = profile
            .policy
            .issuer
            .parse()
            .map_err(|e| ServiceError::Unavailable(format!("est.issuer: {e}")))?;
        let Some(Issuer::Local(ca)) = self.inner.issuers.get(&id) else {
            return Err(ServiceError::Unavailable(format!(
                "est.issuer '{id}' is not a local CA issuer"
            )));
        };
        let mut certs = Vec::new();
        for pem in [ca.root_pem(), ca.intermediate_pem()] {
            certs.push(pem_block_der(pem, "CERTIFICATE").map_err(|e| ServiceError::Unavailable(e.to_string()))?);
        }
        certs_only_pkcs7(&certs).map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// `/simpleenroll`: signs the CSR (the request body: base64 of DER) within the profile and
    /// returns the new certificate as certs-only PKCS#7 (DER). Credentials are checked by the
    /// caller.
    pub async fn est_enroll(&self, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let profile = self.est_profile()?.clone();
        let csr_der = decode_est_body(body).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let leaf = self.enroll(&csr_der, &profile.policy, "est", KeepCsr::Yes).await?;
        certs_only_pkcs7(&leaf).map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// Issues a certificate for a CSR (DER) that came in over an enrollment protocol (`via`),
    /// within `policy`: the same checks and job queue as `POST /certificates`, so enrolled
    /// certificates are in the inventory like any other. Returns the chain, DER, leaf first.
    pub(crate) async fn enroll(
        &self,
        csr_der: &[u8],
        policy: &EnrollmentPolicy,
        via: &str,
        keep_csr: KeepCsr,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let csr = ParsedCsr::parse(csr_der).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let names = IssuanceRequest::resolve(None, &[], Some(&csr.names), &self.inner.config.name_policy)
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
        let (cert, job) = self.create_certificate(request).await?;
        let job = self.wait_for_job(job.id, ENROLL_WAIT).await?;
        if keep_csr == KeepCsr::No && matches!(job.state, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
        {
            self.inner.store.forget_csr(cert.id).await?;
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
        let (version, _) = self.version(cert.id, None).await?;
        tracing::info!(certificate = %cert.id, name = %cert.name, via, "enrolled");
        chain_der(&version.cert_pem).map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// `/csrattrs`: what a CSR should look like (DER).
    pub fn est_csr_attributes(&self) -> Result<Vec<u8>, ServiceError> {
        self.est_profile()?;
        Ok(ck_pki::csr_attributes())
    }
}

impl ControlPlane {
    /// `/simplereenroll`: the client proves itself with its current certificate (`client_leaf`,
    /// DER, whose chain the TLS layer verified against every CA it trusts); the CSR must ask
    /// for exactly that certificate's names (RFC 7030 §4.2.2).
    ///
    /// The TLS layer also trusts the extra client CAs of `tls.client_ca_file` (partners'
    /// CAs, for tokens) and knows no revocations, so this checks itself that one of our local
    /// CAs issued the certificate, that this CA's store knows it and has not revoked it, and
    /// that it is within its validity.
    pub async fn est_reenroll(&self, client_leaf: &[u8], body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        self.est_profile()?;
        let current = ck_pki::leaf_names_and_serial(client_leaf)
            .map_err(|e| ServiceError::Forbidden(format!("the client certificate: {e}")))?;
        let facts = ck_pki::client_certificate_facts(client_leaf)
            .map_err(|e| ServiceError::Forbidden(format!("the client certificate: {e}")))?;
        if !facts.valid_at(crate::now()) {
            return Err(ServiceError::Forbidden(
                "the client certificate is expired (or not yet valid): enroll anew with simpleenroll".to_owned(),
            ));
        }
        let Some((_, status)) = self.own_ca_standing(client_leaf, &current.serial_hex).await? else {
            return Err(ServiceError::Forbidden(
                "the client certificate was not issued by certkeeper's local CA: only certificates enrolled here \
                 can re-enroll; enroll anew with simpleenroll"
                    .to_owned(),
            ));
        };
        match status {
            ck_store::SerialStatus::Issued => {}
            ck_store::SerialStatus::Revoked(_) => {
                return Err(ServiceError::Forbidden(
                    "the client certificate is revoked: enroll anew with simpleenroll".to_owned(),
                ));
            }
            ck_store::SerialStatus::Unknown => {
                return Err(ServiceError::Forbidden(
                    "the client certificate is not in certkeeper's inventory: enroll anew with simpleenroll".to_owned(),
                ));
            }
        }
        let csr_der = decode_est_body(body).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let csr = ParsedCsr::parse(&csr_der).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let asked = IssuanceRequest::resolve(None, &[], Some(&csr.names), &self.inner.config.name_policy)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let asked: BTreeSet<String> = asked.sans.iter().map(ToString::to_string).collect();
        let held: BTreeSet<String> = current.names.into_iter().collect();
        if asked != held {
            return Err(ServiceError::Forbidden(format!(
                "a re-enrollment must ask for the names of the current certificate ({}), not {}",
                held.into_iter().collect::<Vec<_>>().join(", "),
                asked.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        self.est_enroll(body).await
    }
}
