//! The certificate bundle a deployment writes, with the key kept out of logs.

use sha2::{Digest, Sha256};

use crate::error::DeployError;

/// A PEM private key whose `Debug` output never shows the key.
#[derive(Clone)]
pub struct SecretPem(String);

impl SecretPem {
    /// Wraps a PEM private key.
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

/// What a deployment writes: the leaf and its chain (PEM, leaf first) and the key (PEM).
#[derive(Clone, Debug)]
pub struct Bundle {
    /// Leaf certificate first, then intermediates, PEM.
    pub chain_pem: String,
    /// The private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key_pem: SecretPem,
    /// Lowercase hex SHA-256 of the leaf's DER: what "already deployed" and verification compare.
    pub fingerprint: String,
}

impl Bundle {
    /// Builds a bundle from PEM text, computing the leaf fingerprint.
    pub fn from_pem(chain_pem: String, key_pem: SecretPem) -> Result<Self, DeployError> {
        let certs = parse_certs(&chain_pem)?;
        let leaf = certs.first().ok_or(DeployError::InvalidBundle {
            reason: "the chain holds no CERTIFICATE block".into(),
        })?;
        let fingerprint = sha256_hex(leaf);
        Ok(Self {
            chain_pem,
            key_pem,
            fingerprint,
        })
    }

    /// The DER certificates of the chain, leaf first.
    pub fn certs_der(&self) -> Result<Vec<Vec<u8>>, DeployError> {
        parse_certs(&self.chain_pem)
    }

    /// The PEM blocks of the chain after the leaf (the intermediates), concatenated.
    pub fn intermediates_pem(&self) -> Result<String, DeployError> {
        let certs = parse_certs(&self.chain_pem)?;
        Ok(certs.iter().skip(1).map(|der| cert_pem(der)).collect())
    }

    /// The leaf alone, PEM.
    pub fn leaf_pem(&self) -> Result<String, DeployError> {
        let certs = parse_certs(&self.chain_pem)?;
        certs
            .first()
            .map(|der| cert_pem(der))
            .ok_or(DeployError::InvalidBundle {
                reason: "the chain holds no CERTIFICATE block".into(),
            })
    }

    /// The key as PKCS#8 DER, which keystores need.
    pub(crate) fn key_pkcs8_der(&self) -> Result<Vec<u8>, DeployError> {
        let block = pem::parse(self.key_pem.expose()).map_err(|_| DeployError::InvalidBundle {
            // The parse error could quote key material, so it is not passed on.
            reason: "the key is not valid PEM".into(),
        })?;
        if block.tag() == "PRIVATE KEY" {
            Ok(block.into_contents())
        } else {
            Err(DeployError::InvalidBundle {
                reason: format!("keystores need a PKCS#8 key (PRIVATE KEY), got {}", block.tag()),
            })
        }
    }
}

fn parse_certs(chain_pem: &str) -> Result<Vec<Vec<u8>>, DeployError> {
    let blocks = pem::parse_many(chain_pem).map_err(|e| DeployError::InvalidBundle {
        reason: format!("the chain is not valid PEM: {e}"),
    })?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

fn cert_pem(der: &[u8]) -> String {
    let block = pem::Pem::new("CERTIFICATE", der.to_vec());
    pem::encode_config(&block, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

/// Lowercase hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
