//! Reading a chain a remote CA sent (ACME): the leaf's facts, checked against the key we asked
//! to certify.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::pem_encode;
use crate::{PkiError, hex, sha256_hex};

/// The leaf of a received chain, split out and described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedChain {
    /// The leaf alone (PEM).
    pub cert_pem: String,
    /// The leaf, then the intermediates, re-encoded as clean PEM.
    pub chain_pem: String,
    /// The leaf's DER.
    pub leaf_der: Vec<u8>,
    /// Hex serial (lowercase, no separators, no leading zero byte).
    pub serial: String,
    /// SHA-256 of the leaf's DER (lowercase hex).
    pub fingerprint: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

/// Splits `chain_pem` and checks that its leaf certifies `expected_public_key_der` (the SPKI of
/// the CSR we sent): a CA answering with someone else's certificate is an error, not a success.
pub fn inspect_received_chain(chain_pem: &str, expected_public_key_der: &[u8]) -> Result<ReceivedChain, PkiError> {
    let blocks = pem::parse_many(chain_pem.as_bytes())
        .map_err(|e| PkiError::BadChain(format!("not PEM: {e}")))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .collect::<Vec<_>>();
    let leaf = blocks
        .first()
        .ok_or_else(|| PkiError::BadChain("no certificate in the CA's answer".to_owned()))?;
    let (_, parsed) = X509Certificate::from_der(leaf.contents())
        .map_err(|e| PkiError::BadChain(format!("the leaf does not parse: {e}")))?;
    if parsed.public_key().raw != expected_public_key_der {
        return Err(PkiError::BadChain(
            "the certificate's key is not the key of our CSR".to_owned(),
        ));
    }
    let raw_serial = parsed.raw_serial();
    let first_nonzero = raw_serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw_serial.len().saturating_sub(1));
    let time = |t: x509_parser::time::ASN1Time| t.to_datetime();
    let chain_pem: String = blocks.iter().map(|b| pem_encode("CERTIFICATE", b.contents())).collect();
    Ok(ReceivedChain {
        cert_pem: pem_encode("CERTIFICATE", leaf.contents()),
        chain_pem,
        leaf_der: leaf.contents().to_vec(),
        serial: hex(&raw_serial[first_nonzero..]),
        fingerprint: sha256_hex(leaf.contents()),
        not_before: time(parsed.validity().not_before),
        not_after: time(parsed.validity().not_after),
    })
}

/// The DER inside a PEM block of `tag` (a stored CSR or certificate).
pub fn pem_block_der(pem_text: &str, tag: &str) -> Result<Vec<u8>, PkiError> {
    pem::parse_many(pem_text.as_bytes())
        .map_err(|e| PkiError::BadChain(format!("not PEM: {e}")))?
        .into_iter()
        .find(|block| block.tag() == tag)
        .map(|block| block.contents().to_vec())
        .ok_or_else(|| PkiError::BadChain(format!("no {tag} block")))
}

/// What the control plane needs of a TLS client certificate to bind it to a token and to
/// check it against its CA's revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificateFacts {
    /// SHA-256 of the DER, lowercase hex: the binding to a token.
    pub fingerprint: String,
    /// Serial, lowercase hex without leading zero bytes (as the store keeps serials).
    pub serial: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

impl ClientCertificateFacts {
    /// Whether `now` lies within the certificate's validity.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Reads a DER client certificate's fingerprint, serial and validity.
pub fn client_certificate_facts(cert_der: &[u8]) -> Result<ClientCertificateFacts, PkiError> {
    let (_, parsed) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::BadChain(format!("the certificate does not parse: {e}")))?;
    let validity = parsed.validity();
    let time = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|e| PkiError::BadChain(format!("the certificate's validity is out of range: {e}")))
    };
    Ok(ClientCertificateFacts {
        fingerprint: sha256_hex(cert_der),
        serial: hex(parsed.raw_serial()),
        not_before: time(validity.not_before)?,
        not_after: time(validity.not_after)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaConfig, CaMaterial, LeafProfile, LocalCa, ServerKey};
    use ck_domain::{KeyType, SubjectAltName};

    #[test]
    fn reads_a_chain_and_checks_its_key() {
        let now = OffsetDateTime::now_utc();
        let ca = LocalCa::load(&CaMaterial::create(&CaConfig::default(), now).unwrap()).unwrap();
        let sans = vec![SubjectAltName::parse("a.example.test").unwrap()];
        let key = ServerKey::generate(KeyType::EcdsaP256, &sans).unwrap();
        let profile = LeafProfile {
            common_name: "a.example.test".to_owned(),
            sans: sans.clone(),
            not_before: now,
            not_after: now + time::Duration::days(1),
            client_auth: false,
        };
        let issued = ca.sign(&key.public_key_der, &profile).unwrap();
        let chain = inspect_received_chain(&issued.chain_pem, &key.public_key_der).unwrap();
        assert_eq!(chain.fingerprint, issued.fingerprint);
        assert_eq!(chain.serial, issued.serial.trim_start_matches("00"));
        assert_eq!(chain.chain_pem, issued.chain_pem);
        let other = ServerKey::generate(KeyType::EcdsaP256, &sans).unwrap();
        assert!(inspect_received_chain(&issued.chain_pem, &other.public_key_der).is_err());
        assert!(inspect_received_chain("garbage", &key.public_key_der).is_err());
        let csr_der = pem_block_der(&key.csr_pem, "CERTIFICATE REQUEST").unwrap();
        assert!(!csr_der.is_empty());
    }
}
