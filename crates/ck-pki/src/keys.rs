//! Key generation and the private-key newtype that never prints its contents.

use std::fmt;

use ck_domain::KeyType;
use rcgen::{KeyPair, RsaKeySize, SignatureAlgorithm};

use crate::PkiError;

/// A PKCS#8 private key in PEM. `Debug` and `Display` redact it so it cannot reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// Wraps PEM text.
    pub fn new(pem: String) -> Self {
        Self(pem)
    }

    /// The PEM text; every call site is a place the key can leave memory.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

pub(crate) fn signature_algorithm(key_type: KeyType) -> &'static SignatureAlgorithm {
    match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
    }
}

/// Generates a key pair. RSA keys take from tens of milliseconds (2048) to seconds (4096):
/// call this off the async runtime's worker threads.
pub fn generate_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    let algorithm = signature_algorithm(key_type);
    let res = match key_type {
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(algorithm, RsaKeySize::_2048),
        KeyType::Rsa3072 => KeyPair::generate_rsa_for(algorithm, RsaKeySize::_3072),
        KeyType::Rsa4096 => KeyPair::generate_rsa_for(algorithm, RsaKeySize::_4096),
        KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::Ed25519 => KeyPair::generate_for(algorithm),
    };
    res.map_err(|e| PkiError::KeyGeneration(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_are_redacted() {
        let key = PrivateKeyPem::new("-----BEGIN PRIVATE KEY-----\nsecret\n".to_owned());
        assert_eq!(format!("{key:?}"), "PrivateKeyPem(<redacted>)");
        assert!(!format!("{:?}", Some(&key)).contains("secret"));
    }
}
