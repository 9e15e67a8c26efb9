//! The private CA: key generation, CSR parsing and checks, and certificate signing.
//!
//! This crate knows X.509 and nothing about HTTP routing or the database: callers hand it PEM
//! text and times, and get PEM text back. Every CA operation takes `now` as an argument.

mod ca;
mod chain;
mod crl;
mod csr;
mod est;
mod keys;
mod keystore;
mod ocsp;
mod scep;

pub use ca::{CaConfig, CaMaterial, IssuedCertificate, LeafProfile, LocalCa};
pub use chain::{
    ClientCertificateFacts, ReceivedChain, client_certificate_facts, inspect_received_chain, pem_block_der,
};
pub use crl::{CrlRequest, RevokedSerial};
pub use csr::{ParsedCsr, build_csr, pem_encode};
pub use est::{
    LeafIdentity, MAX_EST_BODY, certs_only_pkcs7, chain_der, csr_attributes, decode_est_body, leaf_names_and_serial,
};
pub use keys::{PrivateKeyPem, ServerKey, generate_key};
pub use keystore::{Pkcs12Contents, pkcs12, pkcs12_from_pem};
pub use ocsp::{
    MAX_CERTS_PER_REQUEST, OcspError, OcspErrorStatus, OcspQuery, OcspSigner, OcspStatus, QueriedCert,
    ocsp_error_response,
};
pub use scep::{
    CertRep, FailInfo, KeyBlock, MAX_SCEP_MESSAGE, MessageType, SCEP_CAPABILITIES, ScepHeader, ScepMalformed, ScepRa,
    ScepRefusal, ScepRequest, certifies_key, crafted_pkcs_req, csr_challenge_password, pkcs_req, read_cert_rep,
    renewal_req, scep_csr, signed_pkcs_req,
};

/// Something the PKI layer refused or failed to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The CSR is not a parsable PKCS#10 request.
    #[error("the CSR cannot be parsed: {0} (expected a PEM 'CERTIFICATE REQUEST' block or DER)")]
    CsrUnparsable(String),
    /// The CSR's self-signature does not verify, so whoever sent it may not hold the key.
    #[error("the CSR signature does not verify (the request was altered or signed with another key)")]
    CsrBadSignature,
    /// The key in the CSR is too weak or of an algorithm we do not sign.
    #[error("the CSR key is not acceptable: {0}")]
    CsrWeakKey(String),
    /// A SAN entry of a kind certkeeper does not issue (e-mail, URI…) or a malformed name.
    #[error("the CSR asks for an unsupported or invalid name: {0}")]
    CsrBadName(String),
    /// Key generation failed inside the crypto provider.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),
    /// Stored CA material does not load.
    #[error("the CA material is unusable: {0}")]
    CaMaterial(String),
    /// A certificate chain from a remote CA is unusable.
    #[error("the CA's certificate chain is unusable: {0}")]
    BadChain(String),
    /// Signing failed inside rcgen or the crypto provider.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A keystore could not be encoded.
    #[error("keystore: {0}")]
    Keystore(String),
}

/// The lowercase hex SHA-256 of some bytes (certificate fingerprints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
