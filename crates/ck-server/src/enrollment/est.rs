//! EST enrollment (RFC 7030) over the local CA: HTTP Basic with an enrollment secret, bounded
//! by a profile (allowed names, lifetime); the CSR goes through the same checks and job queue as
//! `POST /certificates`, so enrolled certificates are in the inventory like any other.

use std::collections::BTreeSet;

use ck_domain::{IssuanceRequest, IssuerId};
use ck_pki::{ParsedCsr, certs_only_pkcs7, decode_est_body, pem_block_der};

use std::sync::Arc;

use super::enroll::{KeepCsr, enroll};
use crate::certificates::Certificates;
use crate::issuers::{Issuer, Issuers};
use crate::pki::Pki;
use crate::{EstProfile, ServerConfig, ServiceError};

/// EST (RFC 7030): enrollment over HTTPS with HTTP Basic credentials, re-enrollment with the
/// current certificate. Cheap to clone.
#[derive(Clone)]
pub struct Est(Arc<EstState>);

/// What [`Est`] holds, shared by its clones.
pub struct EstState {
    config: Arc<ServerConfig>,
    certificates: Certificates,
    issuers: Issuers,
    pki: Pki,
}

impl std::ops::Deref for Est {
    type Target = EstState;

    fn deref(&self) -> &EstState {
        &self.0
    }
}

impl Est {
    pub(crate) fn new(config: Arc<ServerConfig>, certificates: Certificates, issuers: Issuers, pki: Pki) -> Self {
        Self(Arc::new(EstState {
            config,
            certificates,
            issuers,
            pki,
        }))
    }

    fn est_profile(&self) -> Result<&EstProfile, ServiceError> {
        self.config.est.as_ref().ok_or_else(|| {
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
        let Some(Issuer::Local(ca)) = self.issuers.known(&id) else {
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
        let leaf = enroll(
            &self.certificates,
            &self.config.name_policy,
            &csr_der,
            &profile.policy,
            "est",
            KeepCsr::Yes,
        )
        .await?;
        certs_only_pkcs7(&leaf).map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// `/csrattrs`: what a CSR should look like (DER).
    pub fn est_csr_attributes(&self) -> Result<Vec<u8>, ServiceError> {
        self.est_profile()?;
        Ok(ck_pki::csr_attributes())
    }

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
        let Some((_, status)) = self.pki.own_ca_standing(client_leaf, &current.serial_hex).await? else {
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
        let asked = IssuanceRequest::resolve(None, &[], Some(&csr.names), &self.config.name_policy)
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
