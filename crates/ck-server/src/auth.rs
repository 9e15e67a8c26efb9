//! API tokens: generation, hashing, and constant-time verification.
//!
//! Only SHA-256 hashes are stored. Tokens carry 256 random bits, so a fast hash is enough (no
//! password-stretching needed), and comparing hashes in constant time avoids leaking how much
//! of a guess matched.

use std::sync::{Arc, RwLock};

use base64::Engine;
use subtle::ConstantTimeEq;

/// A new random token: `ck_` and 43 URL-safe base64 characters.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "the system RNG failed".to_owned())?;
    Ok(format!(
        "ck_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The hex SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    ck_pki::sha256_hex(token.as_bytes())
}

/// Checks presented tokens against the stored hashes.
#[derive(Debug, Clone, Default)]
pub struct TokenVerifier {
    hashes: Arc<RwLock<Vec<String>>>,
}

impl TokenVerifier {
    /// A verifier accepting these hashes.
    pub fn new(hashes: Vec<String>) -> Self {
        Self {
            hashes: Arc::new(RwLock::new(hashes)),
        }
    }

    /// Replaces the accepted hashes.
    pub fn set(&self, hashes: Vec<String>) {
        if let Ok(mut guard) = self.hashes.write() {
            *guard = hashes;
        }
    }

    /// Whether the token is valid. Every stored hash is compared, in constant time each.
    pub fn verify(&self, token: &str) -> bool {
        let presented = hash_token(token);
        let Ok(hashes) = self.hashes.read() else { return false };
        let mut matched = subtle::Choice::from(0);
        for hash in hashes.iter() {
            matched |= presented.as_bytes().ct_eq(hash.as_bytes());
        }
        matched.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_hash_only() {
        let token = new_token().unwrap();
        assert!(token.starts_with("ck_") && token.len() == 46);
        let verifier = TokenVerifier::new(vec![hash_token(&token)]);
        assert!(verifier.verify(&token));
        assert!(!verifier.verify("ck_wrong"));
        assert!(!verifier.verify(""));
        verifier.set(Vec::new());
        assert!(!verifier.verify(&token));
    }
}
