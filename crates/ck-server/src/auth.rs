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

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator: the whole API except the agent endpoints.
    Admin,
    /// An agent (its id): only the agent endpoints, only about itself.
    Agent(String),
}

/// Checks presented tokens against the stored hashes.
#[derive(Debug, Clone, Default)]
pub struct TokenVerifier {
    hashes: Arc<RwLock<Vec<(String, Principal)>>>,
}

impl TokenVerifier {
    /// A verifier accepting these admin token hashes.
    pub fn new(hashes: Vec<String>) -> Self {
        Self::with_principals(hashes.into_iter().map(|h| (h, Principal::Admin)).collect())
    }

    /// A verifier accepting these hashes, each for its principal.
    pub fn with_principals(hashes: Vec<(String, Principal)>) -> Self {
        Self {
            hashes: Arc::new(RwLock::new(hashes)),
        }
    }

    /// Replaces the accepted admin hashes (agent tokens stay).
    pub fn set(&self, hashes: Vec<String>) {
        if let Ok(mut guard) = self.hashes.write() {
            guard.retain(|(_, p)| *p != Principal::Admin);
            guard.extend(hashes.into_iter().map(|h| (h, Principal::Admin)));
        }
    }

    /// Accepts one more token hash.
    pub fn add(&self, hash: String, principal: Principal) {
        if let Ok(mut guard) = self.hashes.write() {
            guard.push((hash, principal));
        }
    }

    /// Whose token this is, if it is valid. Every stored hash is compared, in constant time
    /// each, and the loop never stops early, so timing says nothing about which one matched.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let presented = hash_token(token);
        let Ok(hashes) = self.hashes.read() else { return None };
        let mut found = None;
        for (hash, principal) in hashes.iter() {
            let matched: bool = presented.as_bytes().ct_eq(hash.as_bytes()).into();
            if matched {
                found = Some(principal.clone());
            }
        }
        found
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
        assert_eq!(verifier.verify(&token), Some(Principal::Admin));
        assert_eq!(verifier.verify("ck_wrong"), None);
        assert_eq!(verifier.verify(""), None);
        let agent_token = new_token().unwrap();
        verifier.add(hash_token(&agent_token), Principal::Agent("a1".into()));
        assert_eq!(verifier.verify(&agent_token), Some(Principal::Agent("a1".into())));
        verifier.set(Vec::new());
        assert_eq!(verifier.verify(&token), None);
        assert_eq!(
            verifier.verify(&agent_token),
            Some(Principal::Agent("a1".into())),
            "agents stay"
        );
    }
}
