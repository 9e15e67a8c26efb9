//! Operator tokens: create, list, revoke, rotate; the expiry sweep; loading every live
//! credential (operators and agents) into the verifier; and the audit trail's service calls.

use std::collections::{BTreeMap, HashMap};

use ck_domain::{Restriction, Scopes};
use ck_store::{AuditRecord, Store, TokenRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{AgentScope, Credential, Credentials, MintedToken, Operator, Principal, TokenVerifier};
use crate::{ServiceError, now};

/// What a new token may do.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// A unique name among live tokens.
    pub name: String,
    /// Its scopes (never `agent`).
    pub scopes: Scopes,
    /// Which certificates it reaches; `None` inherits the creator's.
    pub restriction: Option<Restriction>,
    /// Seconds until it expires; `None` never.
    pub lifetime_seconds: Option<i64>,
    /// The SHA-256 fingerprint (hex, of the DER; colons allowed) of the one TLS client
    /// certificate that signs in as the token.
    pub client_cert_sha256: Option<String>,
}

/// Where a token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// It works.
    Active,
    /// Its lifetime is over.
    Expired,
    /// Someone revoked it.
    Revoked,
}

impl TokenStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Row id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The token's public prefix (`ck_<key>_`), to recognise it in a secret scanner's report.
    pub prefix: Option<String>,
    /// Scopes.
    pub scopes: Scopes,
    /// Restriction.
    pub restriction: Restriction,
    /// Status now.
    pub status: TokenStatus,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Last secret replacement.
    pub rotated_at: Option<OffsetDateTime>,
    /// Who made it.
    pub created_by: Option<String>,
    /// When.
    pub created_at: OffsetDateTime,
    /// The subject it was mapped to before certificates were bound by fingerprint (no longer
    /// honoured).
    pub client_subject: Option<String>,
    /// The fingerprint of the TLS client certificate that signs in as it.
    pub client_cert_sha256: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct StoredRestriction {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    name_suffixes: Vec<String>,
}

fn restriction_json(restriction: &Restriction) -> Option<String> {
    (!restriction.is_unrestricted()).then(|| {
        serde_json::json!({"labels": restriction.labels(), "name_suffixes": restriction.name_suffixes()}).to_string()
    })
}

fn parse_restriction(record: &TokenRecord) -> Restriction {
    let stored: StoredRestriction = record
        .restriction
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    // A stored restriction that no longer parses must not widen the token: it then reaches
    // no certificate at all (a label no certificate can carry).
    Restriction::new(stored.labels, stored.name_suffixes).unwrap_or_else(|_| {
        Restriction::new(
            BTreeMap::from([("certkeeper.invalid".into(), String::new())]),
            Vec::new(),
        )
        .unwrap_or_default()
    })
}

pub(super) fn info(record: &TokenRecord, now: OffsetDateTime) -> TokenInfo {
    let status = if record.revoked_at.is_some() {
        TokenStatus::Revoked
    } else if record.expires_at.is_some_and(|at| at <= now) {
        TokenStatus::Expired
    } else {
        TokenStatus::Active
    };
    TokenInfo {
        id: record.id.clone(),
        name: record.name.clone(),
        prefix: record.token_key.as_ref().map(|key| format!("ck_{key}_")),
        // An unknown stored scope is dropped: narrower, never wider.
        scopes: record.scopes.split(',').filter_map(|s| s.parse().ok()).collect(),
        restriction: parse_restriction(record),
        status,
        expires_at: record.expires_at,
        revoked_at: record.revoked_at,
        rotated_at: record.rotated_at,
        created_by: record.created_by.clone(),
        created_at: record.created_at,
        client_subject: record.client_subject.clone(),
        client_cert_sha256: record.client_cert_sha256.clone(),
    }
}

/// Whether `caller` may see, revoke or rotate `token`: the token can do nothing the caller
/// cannot (its scopes are a subset of the caller's) and reaches no certificate the caller does
/// not (its restriction is at least as narrow). The same rule as for making a token, so no
/// token can ever obtain, through another, more than it has itself.
pub(crate) fn reaches(caller: &Principal, token: &TokenInfo) -> bool {
    caller.scopes().includes(token.scopes) && caller.restriction().is_within(&token.restriction)
}

/// `Ok` when `caller` reaches every certificate: server-wide data (the whole audit trail,
/// notifications, issuers' accounts) is for unrestricted operators only.
pub(crate) fn require_unrestricted(caller: &Principal, what: &str) -> Result<(), ServiceError> {
    if caller.restriction().is_unrestricted() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(format!(
            "{what} spans every team's certificates: a restricted token cannot reach it"
        )))
    }
}

/// A certificate fingerprint as stored: 64 lowercase hex digits (colons and spaces, as
/// `openssl x509 -fingerprint -sha256` prints them, are dropped).
pub(super) fn normalize_fingerprint(text: &str) -> Result<String, ServiceError> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':' && *c != ' ')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(ServiceError::Invalid(format!(
            "client certificate fingerprint '{}' is not a SHA-256 (64 hex digits; \
             `openssl x509 -in cert.pem -noout -fingerprint -sha256` prints it)",
            text.trim()
        )))
    }
}

pub(super) fn validate_name(name: &str) -> Result<&str, ServiceError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ServiceError::Invalid(format!(
            "token name '{name}' must be 1 to 64 letters, digits, '-', '_' or '.' (e.g. ci-deploy)"
        )));
    }
    Ok(name)
}

/// Every live credential in the store: operators' tokens and agents' tokens.
pub(crate) async fn load_credentials(store: &Store) -> Result<Credentials, ServiceError> {
    let now = now();
    let mut credentials = HashMap::new();
    let mut by_fingerprint = HashMap::new();
    for record in store.tokens().await? {
        let token = info(&record, now);
        if token.status == TokenStatus::Revoked {
            continue;
        }
        let principal = Principal::Operator(Operator {
            token_id: token.id,
            name: token.name,
            scopes: token.scopes,
            restriction: token.restriction,
        });
        let credential = Credential {
            hash: record.token_hash.clone(),
            principal,
            expires_at: record.expires_at,
        };
        if let Some(fingerprint) = &record.client_cert_sha256 {
            by_fingerprint.insert(fingerprint.clone(), credential.clone());
        }
        credentials.insert(
            TokenVerifier::lookup_key(record.token_key.as_deref(), &record.token_hash),
            credential,
        );
    }
    for agent in store.agent_credentials().await? {
        // An unknown stored scope reads as the narrower one.
        let scope = agent.scope.parse().unwrap_or(AgentScope::Read);
        credentials.insert(
            TokenVerifier::lookup_key(agent.token_key.as_deref(), &agent.token_hash),
            Credential {
                hash: agent.token_hash,
                principal: Principal::Agent {
                    id: agent.id,
                    name: agent.name,
                    scope,
                },
                expires_at: None,
            },
        );
    }
    Ok(Credentials {
        by_key: credentials,
        by_fingerprint,
    })
}

/// A token row for `minted`, made by `created_by`.
pub(crate) fn token_record(
    name: &str,
    minted: &MintedToken,
    scopes: Scopes,
    restriction: &Restriction,
    expires_at: Option<OffsetDateTime>,
    created_by: &str,
    now: OffsetDateTime,
) -> TokenRecord {
    TokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        token_key: Some(minted.key.clone()),
        token_hash: minted.hash.clone(),
        scopes: scopes.to_string(),
        restriction: restriction_json(restriction),
        expires_at,
        expired_at: None,
        revoked_at: None,
        rotated_at: None,
        created_by: Some(created_by.to_owned()),
        created_at: now,
        client_subject: None,
        client_cert_sha256: None,
    }
}

/// An audit event being built.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// What happened: `certificate.create`…
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// What it was done to.
    pub resource: Option<String>,
    /// The request.
    pub request_id: Option<String>,
    /// The HTTP status.
    pub status: Option<u16>,
    /// The client address.
    pub client: Option<String>,
    /// SHA-256 of the body.
    pub body_sha256: Option<String>,
    /// A secret-free note.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event with the required fields.
    pub fn new(action: impl Into<String>, actor: impl Into<String>, outcome: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            actor: actor.into(),
            outcome: outcome.into(),
            resource: None,
            request_id: None,
            status: None,
            client: None,
            body_sha256: None,
            detail: None,
        }
    }

    /// Sets the resource.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub(crate) fn into_record(self, at: OffsetDateTime) -> AuditRecord {
        AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            actor: self.actor,
            action: self.action,
            resource: self.resource,
            request_id: self.request_id,
            outcome: self.outcome,
            status: self.status,
            client: self.client,
            body_sha256: self.body_sha256,
            detail: self.detail,
        }
    }
}
