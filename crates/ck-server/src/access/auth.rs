//! API tokens: minting, salted hashing, and verification.
//!
//! A token is `ck_<key>_<secret>`: the prefix makes leaked tokens easy for secret scanners to
//! find, the 16-hex-digit key finds the stored row, and the 256-bit secret is checked against
//! `hmac-sha256$<salt>$<mac>`, compared in constant time. The secret carries 256 random bits,
//! so no password stretching is needed; the per-token salt means equal hashes never reveal
//! equal tokens and precomputed tables are useless. Tokens of earlier versions (`ck_` and the
//! secret only, stored as a bare SHA-256) are still accepted and found by their hash.
//! One map lookup keeps verification O(1) with 10,000 agents.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use ck_domain::{Restriction, Scope, Scopes};
use time::OffsetDateTime;

/// A freshly minted token: the plain text (shown once) and what is stored.
pub(crate) struct MintedToken {
    /// The whole token, for the caller only.
    pub(crate) token: String,
    /// The public key that finds the row.
    pub(crate) key: String,
    /// The salted hash.
    pub(crate) hash: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

const KEY_HEX_LEN: usize = 16;
const HASH_SCHEME: &str = "hmac-sha256";

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "the system RNG failed".to_owned())?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn mac(salt: &[u8], secret: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), secret.as_bytes())
}

/// Makes a new random token with its key and salted hash.
pub(crate) fn mint_token() -> Result<MintedToken, String> {
    let key = hex(&random::<{ KEY_HEX_LEN / 2 }>()?);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?);
    let salt = random::<16>()?;
    let hash = format!("{HASH_SCHEME}${}${}", hex(&salt), hex(mac(&salt, &secret).as_ref()));
    Ok(MintedToken {
        token: format!("ck_{key}_{secret}"),
        key,
        hash,
    })
}

/// Splits a token into its key and secret, if it has the current form.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("ck_")?;
    let key = rest.get(..KEY_HEX_LEN)?;
    let secret = rest.get(KEY_HEX_LEN..)?.strip_prefix('_')?;
    (key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && !secret.is_empty())
        .then_some((key, secret))
}

/// The lookup key of a token of an earlier version: its bare SHA-256.
fn legacy_key(token: &str) -> String {
    ck_pki::sha256_hex(token.as_bytes())
}

/// Whether `token` matches a stored hash (salted, or the bare SHA-256 of earlier versions).
fn hash_matches(stored: &str, token: &str) -> bool {
    match stored.split('$').collect::<Vec<_>>().as_slice() {
        [HASH_SCHEME, salt, expected] => {
            let (Some((_, secret)), Some(salt), Some(expected)) = (split_token(token), unhex(salt), unhex(expected))
            else {
                return false;
            };
            constant_time::verify_slices_are_equal(mac(&salt, secret).as_ref(), &expected).is_ok()
        }
        _ => constant_time::verify_slices_are_equal(legacy_key(token).as_bytes(), stored.as_bytes()).is_ok(),
    }
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

/// An operator's API token, as the API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The token's id.
    pub token_id: String,
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub scopes: Scopes,
    /// Which certificates it reaches.
    pub restriction: Restriction,
}

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator's token: the scopes and restriction say what it may do.
    Operator(Operator),
    /// An agent: only the agent endpoints, only about itself.
    Agent {
        /// The agent's id.
        id: String,
        /// The agent's name.
        name: String,
        /// What its token allows.
        scope: AgentScope,
    },
}

static UNRESTRICTED: std::sync::LazyLock<Restriction> = std::sync::LazyLock::new(Restriction::default);

impl Principal {
    /// What the principal may do.
    pub fn scopes(&self) -> Scopes {
        match self {
            Self::Operator(operator) => operator.scopes,
            Self::Agent { .. } => Scopes::only(Scope::Agent),
        }
    }

    /// Which certificates it reaches (agents are limited by binding, not by this).
    pub fn restriction(&self) -> &Restriction {
        match self {
            Self::Operator(operator) => &operator.restriction,
            Self::Agent { .. } => &UNRESTRICTED,
        }
    }

    /// How the audit trail names it.
    pub fn actor(&self) -> String {
        match self {
            Self::Operator(operator) => format!("token:{}", operator.name),
            Self::Agent { name, .. } => format!("agent:{name}"),
        }
    }
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not a token we know (or revoked).
    Unknown,
    /// A real token whose lifetime is over.
    Expired(OffsetDateTime),
}

/// A live credential: its stored hash, who it is, and until when.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The stored hash.
    pub(crate) hash: String,
    /// Who presents it.
    pub principal: Principal,
    /// When it stops working.
    pub expires_at: Option<OffsetDateTime>,
}

/// The live credentials: by lookup key (the token key, or the bare hash of earlier tokens),
/// and by the fingerprint of the TLS client certificate bound to a token.
#[derive(Debug, Clone, Default)]
pub struct TokenVerifier {
    credentials: Arc<RwLock<Credentials>>,
}

/// One consistent set of credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// By token key (or legacy hash).
    pub by_key: HashMap<String, Credential>,
    /// By client certificate SHA-256 fingerprint (lowercase hex).
    pub by_fingerprint: HashMap<String, Credential>,
}

impl TokenVerifier {
    /// The lookup key of a stored credential: its token key, or for earlier tokens the hash.
    pub fn lookup_key(token_key: Option<&str>, hash: &str) -> String {
        token_key.unwrap_or(hash).to_owned()
    }

    /// Replaces every credential (the periodic refresh from the store).
    pub fn replace_all(&self, credentials: Credentials) {
        if let Ok(mut guard) = self.credentials.write() {
            *guard = credentials;
        }
    }

    /// Accepts one more credential.
    pub fn insert(&self, key: String, credential: Credential) {
        if let Ok(mut guard) = self.credentials.write() {
            guard.by_key.insert(key, credential);
        }
    }

    /// Whose token this is, if it is valid at `now`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Principal, TokenRejection> {
        let guard = self.credentials.read().map_err(|_| TokenRejection::Unknown)?;
        let found = split_token(token)
            .and_then(|(key, _)| guard.by_key.get(key))
            .or_else(|| guard.by_key.get(&legacy_key(token)));
        let credential = found
            .filter(|c| hash_matches(&c.hash, token))
            .ok_or(TokenRejection::Unknown)?;
        live(credential, now)
    }

    /// The token bound to a (verified) client certificate's fingerprint, if it is valid at `now`.
    pub fn verify_fingerprint(&self, fingerprint: &str, now: OffsetDateTime) -> Result<Principal, TokenRejection> {
        let guard = self.credentials.read().map_err(|_| TokenRejection::Unknown)?;
        live(
            guard.by_fingerprint.get(fingerprint).ok_or(TokenRejection::Unknown)?,
            now,
        )
    }
}

/// Why a TLS client certificate did not sign in.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertificateRejection {
    /// It does not parse.
    #[error("the client certificate does not parse: {0}")]
    Unreadable(String),
    /// Expired or not yet valid.
    #[error("the client certificate {0} is expired or not yet valid")]
    OutsideValidity(String),
    /// Revoked by one of our CAs.
    #[error("the client certificate {0} is revoked")]
    Revoked(String),
    /// No live token is bound to it, or the bound token expired.
    #[error("no live token is bound to the client certificate {1}")]
    Token(TokenRejection, String),
    /// The revocation check could not be made: refused rather than guessed.
    #[error("the client certificate's revocation status cannot be read now")]
    Unavailable(#[from] ck_store::StoreError),
}

fn live(credential: &Credential, now: OffsetDateTime) -> Result<Principal, TokenRejection> {
    match credential.expires_at {
        Some(at) if at <= now => Err(TokenRejection::Expired(at)),
        _ => Ok(credential.principal.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator(name: &str) -> Principal {
        Principal::Operator(Operator {
            token_id: name.into(),
            name: name.into(),
            scopes: Scopes::operator(),
            restriction: Restriction::default(),
        })
    }

    #[test]
    fn tokens_verify_by_salted_hash() {
        let minted = mint_token().unwrap();
        assert!(minted.token.starts_with(&format!("ck_{}_", minted.key)));
        assert_eq!(minted.token.len(), 3 + 16 + 1 + 43);
        assert!(minted.hash.starts_with("hmac-sha256$") && !minted.hash.contains(&minted.token[20..]));
        assert!(!format!("{minted:?}").contains(&minted.token));
        let verifier = TokenVerifier::default();
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        verifier.insert(
            minted.key.clone(),
            Credential {
                hash: minted.hash.clone(),
                principal: operator("ci"),
                expires_at: None,
            },
        );
        assert_eq!(verifier.verify(&minted.token, now), Ok(operator("ci")));
        // The right key with a wrong secret, a truncated token, garbage.
        let forged = format!("ck_{}_{}", minted.key, "A".repeat(43));
        assert_eq!(verifier.verify(&forged, now), Err(TokenRejection::Unknown));
        assert_eq!(verifier.verify(&minted.token[..30], now), Err(TokenRejection::Unknown));
        assert_eq!(verifier.verify("", now), Err(TokenRejection::Unknown));
        // Equal secrets never give equal hashes.
        assert_ne!(mint_token().unwrap().hash, minted.hash);
        verifier.replace_all(Credentials::default());
        assert_eq!(
            verifier.verify(&minted.token, now),
            Err(TokenRejection::Unknown),
            "revoked"
        );
    }

    #[test]
    fn expired_and_legacy_tokens() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        let verifier = TokenVerifier::default();
        let minted = mint_token().unwrap();
        verifier.insert(
            minted.key.clone(),
            Credential {
                hash: minted.hash,
                principal: operator("old"),
                expires_at: Some(now),
            },
        );
        assert_eq!(verifier.verify(&minted.token, now), Err(TokenRejection::Expired(now)));
        // A token of an earlier version: `ck_` + secret, stored as its bare SHA-256.
        let legacy = "ck_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6";
        let hash = legacy_key(legacy);
        verifier.insert(
            TokenVerifier::lookup_key(None, &hash),
            Credential {
                hash,
                principal: operator("legacy"),
                expires_at: None,
            },
        );
        assert_eq!(verifier.verify(legacy, now), Ok(operator("legacy")));
    }
}
