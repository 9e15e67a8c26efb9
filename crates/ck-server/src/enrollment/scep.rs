//! SCEP enrollment (RFC 8894) over the local CA: GetCACaps, GetCACert and PKIOperation
//! (PKCSReq with the profile's challenge password, RenewalReq signed with a current
//! certificate of this CA). Certificates go through the same path as EST enrollments.
//!
//! The RSA registration authority that opens requests and signs answers is issued by the
//! intermediate at first use and re-issued at half its validity; it lives in memory, so every
//! node has its own (clients fetch GetCACert before each enrollment).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ck_domain::{IssuanceRequest, IssuerId, TokenBuckets};
use ck_pki::{FailInfo, MessageType, ParsedCsr, ScepHeader, ScepRa};

use ck_store::Store;

use super::enroll::{KeepCsr, enroll};
use crate::certificates::Certificates;
use crate::pki::Pki;
use crate::{ScepProfile, ServerConfig, ServiceError, now};

/// Lifetime of the RA certificate; a new one is issued at half.
const RA_VALIDITY: time::Duration = time::Duration::days(30);

/// Client addresses whose PKIOperation allowance is tracked at most (full buckets go first).
const LIMITED_ADDRESSES: usize = 100_000;

/// Per issuer: the current RA; per client address: what it may still send.
#[derive(Default)]
struct ScepAuthorities {
    current: tokio::sync::Mutex<HashMap<IssuerId, Arc<ScepRa>>>,
    /// Made at the first PKIOperation, with the time origin its buckets count from.
    limiter: std::sync::Mutex<Option<(Instant, TokenBuckets<IpAddr>)>>,
}

impl ScepProfile {
    /// PKIOperations per client address: 1 per second, bursts of 20. A device enrolls or renews
    /// with one or two; an attack on the RA key needs thousands to millions.
    pub const DEFAULT_RATE_LIMIT: (f64, u32) = (1.0, 20);
}

/// What GetCACert answers.
#[derive(Debug, Clone)]
pub struct ScepCaCerts {
    /// DER: the RA certificate, or a certs-only PKCS#7 of it and RSA CA certificates.
    pub der: Vec<u8>,
    /// `application/x-x509-ca-cert` or `application/x-x509-ca-ra-cert`.
    pub content_type: &'static str,
}

/// SCEP (RFC 8894) through a registration authority of the local CA, rate-limited per client
/// address. Cheap to clone.
#[derive(Clone)]
pub struct Scep(Arc<ScepState>);

/// What [`Scep`] holds, shared by its clones.
pub struct ScepState {
    config: Arc<ServerConfig>,
    certificates: Certificates,
    pki: Pki,
    store: Store,
    authorities: Arc<ScepAuthorities>,
}

impl std::ops::Deref for Scep {
    type Target = ScepState;

    fn deref(&self) -> &ScepState {
        &self.0
    }
}

impl Scep {
    pub(crate) fn new(config: Arc<ServerConfig>, certificates: Certificates, pki: Pki, store: Store) -> Self {
        Self(Arc::new(ScepState {
            config,
            certificates,
            pki,
            store,
            authorities: Arc::default(),
        }))
    }

    fn scep_profile(&self) -> Result<&ScepProfile, ServiceError> {
        self.config.scep.as_ref().ok_or_else(|| {
            ServiceError::NotFound("SCEP (it is off: configure `scep:` in the server's config file)".to_owned())
        })
    }

    /// `GetCACaps`: what this server supports.
    pub fn scep_capabilities(&self) -> Result<&'static str, ServiceError> {
        self.scep_profile()?;
        Ok(ck_pki::SCEP_CAPABILITIES)
    }

    async fn scep_ra(&self) -> Result<(Arc<ScepRa>, Arc<ck_pki::LocalCa>), ServiceError> {
        let profile = self.scep_profile()?;
        let (id, ca) = self.pki.local_ca(&profile.policy.issuer, "SCEP")?;
        let mut current = self.authorities.current.lock().await;
        let now = now();
        if let Some(ra) = current.get(&id)
            && now < ra.not_after() - RA_VALIDITY / 2
        {
            return Ok((ra.clone(), ca));
        }
        let issuing = ca.clone();
        let ra = tokio::task::spawn_blocking(move || issuing.scep_ra(now, RA_VALIDITY))
            .await
            .map_err(|e| ServiceError::Unavailable(format!("issuing the SCEP RA stopped: {e}")))?
            .map_err(|e| ServiceError::Unavailable(format!("issuing the SCEP RA certificate: {e}")))?;
        let ra = Arc::new(ra);
        tracing::info!(issuer = %id, not_after = %ra.not_after(), "issued a SCEP RA certificate");
        current.insert(id, ra.clone());
        Ok((ra, ca))
    }

    /// `GetCACert`: the RA certificate, with the CA certificates clients can use.
    pub async fn scep_ca_certs(&self) -> Result<ScepCaCerts, ServiceError> {
        let (ra, ca) = self.scep_ra().await?;
        let (der, content_type) = ra.ca_certs(&ca).map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        Ok(ScepCaCerts { der, content_type })
    }

    /// Spends one PKIOperation of `client`'s allowance (`ScepProfile::rate_limit`), or says how
    /// long it must wait. Every PKIOperation costs an RSA private-key operation on the RA key,
    /// and querying it without bound is what a padding-oracle attack needs.
    pub fn scep_admit(&self, client: IpAddr) -> Result<(), std::time::Duration> {
        let Ok(profile) = self.scep_profile() else {
            return Ok(());
        };
        let Some((per_second, burst)) = profile.rate_limit else {
            return Ok(());
        };
        let Ok(mut limiter) = self.authorities.limiter.lock() else {
            return Ok(());
        };
        let (origin, buckets) =
            limiter.get_or_insert_with(|| (Instant::now(), TokenBuckets::new(burst, per_second, LIMITED_ADDRESSES)));
        let now = origin.elapsed().as_secs_f64();
        if let Some(wait) = buckets.retry_after(&client, now) {
            return Err(wait);
        }
        buckets.spend(&client, now);
        Ok(())
    }

    /// `PKIOperation`: answers a request with a CertRep (SUCCESS with the certificate, or
    /// FAILURE with a failInfo). `Err` only for messages too broken to answer in band.
    pub async fn scep_pki_operation(&self, message: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let profile = self.scep_profile()?.clone();
        let (ra, ca) = self.scep_ra().await?;
        let request = ra.parse(message).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let header = request.header;
        let outcome = match request.csr_der {
            Err(refusal) => Err((refusal.fail, refusal.reason)),
            Ok(csr_der) => self.scep_issue(&profile, &ca, &header, &csr_der).await,
        };
        let answer = match outcome {
            Ok(chain) => ra.success(&header, &chain),
            Err((fail, reason)) => {
                tracing::warn!(transaction = %header.transaction_id, ?fail, %reason, "SCEP request refused");
                ra.failure(&header, fail)
            }
        };
        answer.map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    /// Authenticates the request and issues its certificate.
    async fn scep_issue(
        &self,
        profile: &ScepProfile,
        ca: &ck_pki::LocalCa,
        header: &ScepHeader,
        csr_der: &[u8],
    ) -> Result<Vec<Vec<u8>>, (FailInfo, String)> {
        let csr = ParsedCsr::parse(csr_der).map_err(|e| (FailInfo::BadRequest, e.to_string()))?;
        // The requester proves it holds the CSR's key by signing the message with it (a
        // self-signed certificate for PKCSReq; its current certificate for RenewalReq, which
        // may certify an older key).
        match header.message_type {
            MessageType::PkcsReq => {
                if !ck_pki::certifies_key(&header.signer_cert_der, &csr.public_key_der) {
                    return Err((
                        FailInfo::BadMessageCheck,
                        "the message is not signed with the CSR's key".to_owned(),
                    ));
                }
                let given = ck_pki::csr_challenge_password(csr_der).unwrap_or_default();
                let ok = aws_lc_rs::constant_time::verify_slices_are_equal(
                    ck_pki::sha256_hex(given.as_bytes()).as_bytes(),
                    ck_pki::sha256_hex(profile.challenge.as_bytes()).as_bytes(),
                )
                .is_ok();
                if !ok {
                    return Err((FailInfo::BadRequest, "wrong or missing challenge password".to_owned()));
                }
            }
            MessageType::RenewalReq => self.scep_renewal_allowed(profile, ca, header, &csr).await?,
            other => return Err((FailInfo::BadRequest, format!("{other:?} is not supported"))),
        }
        enroll(
            &self.certificates,
            &self.config.name_policy,
            csr_der,
            &profile.policy,
            "scep",
            KeepCsr::No,
        )
        .await
        .map_err(|e| (FailInfo::BadRequest, e.to_string()))
    }

    /// A RenewalReq is signed with a certificate this CA issued, valid now, not revoked, for the
    /// same names as the CSR (RFC 8894 §3.3.1.2).
    async fn scep_renewal_allowed(
        &self,
        profile: &ScepProfile,
        ca: &ck_pki::LocalCa,
        header: &ScepHeader,
        csr: &ParsedCsr,
    ) -> Result<(), (FailInfo, String)> {
        let bad_cert = |reason: String| (FailInfo::BadCertId, reason);
        if !ca.issued(&header.signer_cert_der) {
            return Err(bad_cert(
                "the RenewalReq is not signed with a certificate of this CA".to_owned(),
            ));
        }
        // Only a certificate valid now proves the device's identity: an expired one (however
        // long ago) or one not valid yet does not; such a device enrolls anew with the challenge.
        let now = now();
        match header.signer_validity() {
            Some((not_before, not_after)) if not_before <= now && now <= not_after => {}
            Some((_, not_after)) if now > not_after => {
                return Err(bad_cert(format!(
                    "the signing certificate expired at {not_after}: enroll anew with the challenge"
                )));
            }
            _ => {
                return Err(bad_cert(
                    "the signing certificate is not valid yet: enroll anew with the challenge".to_owned(),
                ));
            }
        }
        let current = ck_pki::leaf_names_and_serial(&header.signer_cert_der).map_err(|e| bad_cert(e.to_string()))?;
        match self
            .store
            .serial_status(&profile.policy.issuer, &current.serial_hex)
            .await
        {
            Ok(ck_store::SerialStatus::Issued) => {}
            Ok(_) => {
                return Err(bad_cert(
                    "the signing certificate is revoked or unknown: enroll anew".to_owned(),
                ));
            }
            Err(e) => return Err((FailInfo::BadRequest, e.to_string())),
        }
        let asked = IssuanceRequest::resolve(None, &[], Some(&csr.names), &self.config.name_policy)
            .map_err(|e| (FailInfo::BadRequest, e.to_string()))?;
        let asked: BTreeSet<String> = asked.sans.iter().map(ToString::to_string).collect();
        let held: BTreeSet<String> = current.names.into_iter().collect();
        if asked != held {
            return Err((
                FailInfo::BadRequest,
                "a renewal must ask for the names of the current certificate".to_owned(),
            ));
        }
        Ok(())
    }
}
