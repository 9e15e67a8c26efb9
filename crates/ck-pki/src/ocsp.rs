//! OCSP (RFC 6960): requests parsed, responses signed by a delegated responder certificate
//! (id-kp-OCSPSigning, with id-pkix-ocsp-nocheck) that the intermediate issues, so the CA key
//! signs no responses.
//!
//! The ASN.1 types are x509-ocsp's; the signature is made with the responder's rcgen key over
//! the DER of `ResponseData` (x509-ocsp's builder wants RustCrypto signers we do not use).

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use ck_domain::RevocationReason;
use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ID_SHA_1, ID_SHA_256};
use const_oid::db::rfc6960::{ID_PKIX_OCSP_NOCHECK, ID_PKIX_OCSP_NONCE};
use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use rcgen::{CustomExtension, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PublicKeyData, SigningKey};
use spki::AlgorithmIdentifierOwned;
use time::{Duration, OffsetDateTime};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, OcspResponseStatus,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use ck_domain::KeyType;

use crate::{LocalCa, PkiError, generate_key};

/// Why a request gets an error response instead of statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    /// Not a DER OCSPRequest, or one with no CertID (`malformedRequest`).
    #[error("malformed OCSP request: {0}")]
    Malformed(String),
    /// More CertIDs than one response may carry (`malformedRequest` too).
    #[error("an OCSP request may ask for at most {max} certificates, this one asks for {asked}")]
    TooMany { asked: usize, max: usize },
}

/// At most this many CertIDs per request: a bound on the work one request can cause.
pub const MAX_CERTS_PER_REQUEST: usize = 32;

/// One certificate a request asks about.
#[derive(Debug, Clone)]
pub struct QueriedCert {
    cert_id: CertId,
    /// The serial, lowercase hex as the store keeps it.
    pub serial_hex: String,
    /// Whether the CertID names this responder's issuer (else the answer is `unknown`).
    pub ours: bool,
}

impl QueriedCert {
    /// The whole CertID as the request encoded it (hash algorithm, issuer name hash, issuer
    /// key hash, serial): the key of a cached answer. A response echoes the CertID it was
    /// asked about, so an answer may only be reused for the very same CertID.
    pub fn cache_key(&self) -> Option<Vec<u8>> {
        self.cert_id.to_der().ok()
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct OcspQuery {
    /// What it asks about.
    pub certs: Vec<QueriedCert>,
    /// The nonce extension, echoed in the response (which then cannot come from a cache).
    pub nonce: Option<Extension>,
}

/// What the responder says about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspStatus {
    /// Issued here and not revoked.
    Good,
    /// Revoked at that time, for that reason.
    Revoked {
        at: OffsetDateTime,
        reason: RevocationReason,
    },
    /// Not issued here (or not by this issuer).
    Unknown,
}

/// The hashes a CertID uses to name an issuer, for SHA-1 and SHA-256.
#[derive(Debug, Clone)]
struct IssuerHashes {
    sha1: (Vec<u8>, Vec<u8>),
    sha256: (Vec<u8>, Vec<u8>),
}

/// A delegated OCSP responder: its certificate, its key, and the issuer it answers for.
pub struct OcspSigner {
    cert: x509_cert::Certificate,
    key: KeyPair,
    key_hash: Vec<u8>,
    issuer: IssuerHashes,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for OcspSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspSigner")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn generalized(at: OffsetDateTime) -> Result<OcspGeneralizedTime, PkiError> {
    let seconds = u64::try_from(at.unix_timestamp()).map_err(|_| PkiError::Signing("time before 1970".to_owned()))?;
    let time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(seconds))
        .map_err(|e| PkiError::Signing(format!("time: {e}")))?;
    Ok(OcspGeneralizedTime(time))
}

fn crl_reason(reason: RevocationReason) -> CrlReason {
    match reason {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::RemoveFromCrl => CrlReason::RemoveFromCRL,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signing<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PkiError {
    move |e| PkiError::Signing(format!("{what}: {e}"))
}

impl LocalCa {
    /// Issues a delegated OCSP responder certificate (a fresh P-256 key, valid `validity`,
    /// never past the intermediate) and returns the responder.
    pub fn ocsp_signer(&self, now: OffsetDateTime, validity: Duration) -> Result<OcspSigner, PkiError> {
        let key = generate_key(KeyType::EcdsaP256)?;
        let mut params =
            crate::ca::service_certificate_params("certkeeper OCSP responder", now, validity, self.not_after())?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        // id-pkix-ocsp-nocheck (NULL): relying parties need not check the responder's status.
        let nocheck: Vec<u64> = ID_PKIX_OCSP_NOCHECK.arcs().map(u64::from).collect();
        params.custom_extensions = vec![CustomExtension::from_oid_content(&nocheck, vec![0x05, 0x00])];
        let issued = params
            .signed_by(&key, self.issuer())
            .map_err(signing("OCSP responder certificate"))?;
        let cert = x509_cert::Certificate::from_der(issued.der()).map_err(signing("OCSP responder certificate"))?;
        let key_bits = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let intermediate = pem::parse(self.intermediate_pem()).map_err(signing("intermediate"))?;
        let (_, parsed) = X509Certificate::from_der(intermediate.contents()).map_err(signing("intermediate"))?;
        let name_der = parsed.tbs_certificate.subject.as_raw();
        let issuer_key = &parsed.tbs_certificate.subject_pki.subject_public_key.data;
        let sha1 = |b: &[u8]| digest(&SHA1_FOR_LEGACY_USE_ONLY, b).as_ref().to_vec();
        let sha256 = |b: &[u8]| digest(&SHA256, b).as_ref().to_vec();
        Ok(OcspSigner {
            key_hash: sha1(&key_bits),
            cert,
            key,
            issuer: IssuerHashes {
                sha1: (sha1(name_der), sha1(issuer_key)),
                sha256: (sha256(name_der), sha256(issuer_key)),
            },
            not_after: params.not_after,
        })
    }
}

impl OcspSigner {
    /// When the responder certificate expires (rotate well before).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Parses a DER OCSPRequest. CertIDs of other issuers are kept (they are answered
    /// `unknown`); a signature on the request is ignored, as most responders do.
    pub fn parse_request(&self, der: &[u8]) -> Result<OcspQuery, OcspError> {
        let request = OcspRequest::from_der(der).map_err(|e| OcspError::Malformed(e.to_string()))?;
        let list = &request.tbs_request.request_list;
        if list.is_empty() {
            return Err(OcspError::Malformed("no certificate asked about".to_owned()));
        }
        if list.len() > MAX_CERTS_PER_REQUEST {
            return Err(OcspError::TooMany {
                asked: list.len(),
                max: MAX_CERTS_PER_REQUEST,
            });
        }
        let certs = list
            .iter()
            .map(|item| {
                let id = &item.req_cert;
                let hashes = match id.hash_algorithm.oid {
                    oid if oid == ID_SHA_1 => Some(&self.issuer.sha1),
                    oid if oid == ID_SHA_256 => Some(&self.issuer.sha256),
                    _ => None,
                };
                let ours = hashes.is_some_and(|(name, key)| {
                    id.issuer_name_hash.as_bytes() == name.as_slice() && id.issuer_key_hash.as_bytes() == key.as_slice()
                });
                QueriedCert {
                    serial_hex: hex(id.serial_number.as_bytes()),
                    cert_id: id.clone(),
                    ours,
                }
            })
            .collect();
        let nonce = request
            .tbs_request
            .request_extensions
            .as_ref()
            .and_then(|extensions| extensions.iter().find(|e| e.extn_id == ID_PKIX_OCSP_NONCE))
            .cloned();
        Ok(OcspQuery { certs, nonce })
    }

    /// Signs a response with one status per queried certificate (in order), valid until
    /// `next_update`, echoing `nonce` when given.
    pub fn respond(
        &self,
        certs: &[QueriedCert],
        statuses: &[OcspStatus],
        nonce: Option<&Extension>,
        now: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, PkiError> {
        if certs.len() != statuses.len() {
            return Err(PkiError::Signing("one status per certificate".to_owned()));
        }
        let responses = certs
            .iter()
            .zip(statuses)
            .map(|(cert, status)| {
                let cert_status = match status {
                    OcspStatus::Good => CertStatus::good(),
                    OcspStatus::Unknown => CertStatus::unknown(),
                    OcspStatus::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
                        revocation_time: generalized(*at)?,
                        revocation_reason: Some(crl_reason(*reason)),
                    }),
                };
                Ok(SingleResponse {
                    cert_id: cert.cert_id.clone(),
                    cert_status,
                    this_update: generalized(now)?,
                    next_update: Some(generalized(next_update)?),
                    single_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(OctetString::new(self.key_hash.clone()).map_err(signing("key hash"))?),
            produced_at: generalized(now)?,
            responses,
            response_extensions: nonce.map(|n| vec![n.clone()]),
        };
        let tbs = data.to_der().map_err(signing("OCSP response"))?;
        let signature = self.key.sign(&tbs).map_err(signing("OCSP response"))?;
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA_256,
                parameters: None,
            },
            signature: BitString::from_bytes(&signature).map_err(signing("OCSP signature"))?,
            certs: Some(vec![self.cert.clone()]),
        };
        OcspResponse::successful(basic)
            .and_then(|response| response.to_der())
            .map_err(signing("OCSP response"))
    }

    /// The public key the responder signs with (its certificate's), DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }
}

/// An OCSP error response (`malformedRequest`, `internalError`, …) as DER.
pub fn ocsp_error_response(status: OcspResponseStatus) -> Vec<u8> {
    OcspResponse {
        response_status: status,
        response_bytes: None,
    }
    .to_der()
    // Two fixed bytes of structure around the status: encoding cannot fail. The fallback is
    // the same `malformedRequest` encoded by hand.
    .unwrap_or_else(|_| vec![0x30, 0x03, 0x0a, 0x01, 0x01])
}

pub use x509_ocsp::OcspResponseStatus as OcspErrorStatus;
