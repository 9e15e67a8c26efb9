//! API tokens: generation, hashing, and verification.
//!
//! Only SHA-256 hashes are stored. Tokens carry 256 random bits, so a fast hash is enough (no
//! password-stretching needed). A presented token is hashed and looked up by its hash: the
//! lookup's timing can only tell an attacker about the hash of what they sent, which they know
//! anyway, never about a stored token. One map lookup keeps verification O(1) with 10,000 agents.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;

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

/// What an agent's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentScope {
    /// The agent makes keys, sends CSRs and deploys.
    Deploy,
    /// The agent only reads its certificates (with server-generated keys) and deploys them:
    /// the acme-manager-client model.
    Read,
}

impl AgentScope {
    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Read => "read",
        }
    }
}

impl std::str::FromStr for AgentScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deploy" => Ok(Self::Deploy),
            "read" => Ok(Self::Read),
            other => Err(format!("unknown agent scope '{other}' (expected deploy or read)")),
        }
    }
}

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator: the whole API except the agent endpoints.
    Admin,
    /// An agent: only the agent endpoints, only about itself.
    Agent {
        /// The agent's id.
        id: String,
        /// What its token allows.
        scope: AgentScope,
    },
}

/// Checks presented tokens against the stored hashes.
#[derive(Debug, Clone, Default)]
pub struct TokenVerifier {
    hashes: Arc<RwLock<HashMap<String, Principal>>>,
}

impl TokenVerifier {
    /// A verifier accepting these admin token hashes.
    pub fn new(hashes: Vec<String>) -> Self {
        Self::with_principals(hashes.into_iter().map(|h| (h, Principal::Admin)).collect())
    }

    /// A verifier accepting these hashes, each for its principal.
    pub fn with_principals(hashes: Vec<(String, Principal)>) -> Self {
        Self {
            hashes: Arc::new(RwLock::new(hashes.into_iter().collect())),
        }
    }

    /// Replaces the accepted admin hashes (agent tokens stay).
    pub fn set(&self, hashes: Vec<String>) {
        if let Ok(mut guard) = self.hashes.write() {
            guard.retain(|_, p| *p != Principal::Admin);
            guard.extend(hashes.into_iter().map(|h| (h, Principal::Admin)));
        }
    }

    /// Accepts one more token hash.
    pub fn add(&self, hash: String, principal: Principal) {
        if let Ok(mut guard) = self.hashes.write() {
            guard.insert(hash, principal);
        }
    }

    /// Whose token this is, if it is valid.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let presented = hash_token(token);
        self.hashes.read().ok()?.get(&presented).cloned()
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
        let agent = Principal::Agent {
            id: "a1".into(),
            scope: AgentScope::Deploy,
        };
        verifier.add(hash_token(&agent_token), agent.clone());
        assert_eq!(verifier.verify(&agent_token), Some(agent.clone()));
        verifier.set(Vec::new());
        assert_eq!(verifier.verify(&token), None);
        assert_eq!(verifier.verify(&agent_token), Some(agent), "agents stay");
    }
}
