//! Operator tokens: create, list, revoke, rotate; the expiry sweep; loading every live
//! credential (operators and agents) into the verifier; and the audit trail's service calls.

use std::collections::{BTreeMap, HashMap};

use ck_domain::{Restriction, Scope, Scopes};
use ck_store::{AuditFilter, AuditRecord, Store, TokenRecord};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{ClientCertificateRejection, Credential, Credentials, Operator, mint_token};
use crate::{AgentScope, ControlPlane, Principal, ServiceError, TokenVerifier, now};

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

fn info(record: &TokenRecord, now: OffsetDateTime) -> TokenInfo {
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
fn normalize_fingerprint(text: &str) -> Result<String, ServiceError> {
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

fn validate_name(name: &str) -> Result<&str, ServiceError> {
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
    minted: &crate::auth::MintedToken,
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

/// How often every node reloads credentials and sweeps expired tokens: the longest a token
/// revoked on another node keeps working here.
const CREDENTIALS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn credentials_loop(control_plane: ControlPlane, mut shutdown: crate::workers::Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CREDENTIALS_REFRESH) => {}
            () = shutdown.requested() => return,
        }
        if let Err(error) = control_plane.sweep_expired_tokens().await {
            tracing::warn!(%error, "sweeping expired tokens failed; retrying at the next pass");
        }
        if let Err(error) = control_plane.refresh_credentials().await {
            tracing::warn!(%error, "reloading tokens failed; the previous set stays in force");
        }
        if let Err(error) = control_plane.flush_auth_failures().await {
            tracing::warn!(%error, "recording the tally of failed authentications failed");
        }
    }
}

/// Follows the other nodes' notices (PostgreSQL): finished jobs wake waiting requests here,
/// changed credentials are reloaded at once. Polling stays as the fallback.
pub(crate) async fn notices_loop(control_plane: ControlPlane, mut shutdown: crate::workers::Shutdown) {
    let store = control_plane.inner.store.clone();
    loop {
        let mut listener = match store.listen().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "cannot listen for cluster notices yet; retrying in 2 s");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => continue,
                    () = shutdown.requested() => return,
                }
            }
        };
        loop {
            let notice = tokio::select! {
                notice = listener.next() => notice,
                () = shutdown.requested() => return,
            };
            match notice {
                Ok(ck_store::Notice::JobsFinished(ids)) => control_plane.wake_waiters(&ids),
                Ok(ck_store::Notice::CredentialsChanged) => {
                    if let Err(error) = control_plane.refresh_credentials().await {
                        tracing::warn!(%error, "reloading tokens failed; the previous set stays in force");
                    }
                }
                Ok(ck_store::Notice::AccountChanged { issuer, node }) => {
                    if node != control_plane.inner.config.node_id
                        && let Ok(issuer) = issuer.parse()
                        && let Some(crate::issuers::Issuer::Acme(state)) = control_plane.inner.issuers.get(&issuer)
                    {
                        tracing::info!(%issuer, %node, "another node changed the ACME account; reloading it");
                        state.replace(None).await;
                    }
                }
                Ok(ck_store::Notice::Revoked { issuer, node }) => {
                    if node != control_plane.inner.config.node_id
                        && let Ok(issuer) = issuer.parse()
                    {
                        control_plane.revoked_elsewhere(&issuer).await;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "the notice connection failed; listening again");
                    break;
                }
            }
        }
    }
}

impl ControlPlane {
    /// Makes a token no more powerful than its creator's, and returns it: the only time the
    /// plain token exists.
    pub async fn create_token(&self, creator: &Principal, new: NewToken) -> Result<(TokenInfo, String), ServiceError> {
        let name = validate_name(&new.name)?;
        if new.scopes.is_empty() {
            return Err(ServiceError::Invalid(
                "a token needs at least one scope (read, create, update, delete, admin, export-key)".into(),
            ));
        }
        if new.scopes.contains(Scope::Agent) {
            return Err(ServiceError::Invalid(
                "agent tokens belong to one agent: make them with `certkeeper agents add NAME`".into(),
            ));
        }
        if !creator.scopes().includes(new.scopes) {
            return Err(ServiceError::Forbidden(format!(
                "a token cannot grant scopes it lacks: this token has {}, the new one asks for {}",
                creator.scopes(),
                new.scopes
            )));
        }
        let restriction = new.restriction.unwrap_or_else(|| creator.restriction().clone());
        if !creator.restriction().is_within(&restriction) {
            return Err(ServiceError::Forbidden(
                "a restricted token can only create tokens restricted at least as narrowly (same labels, \
                 suffixes under its own)"
                    .into(),
            ));
        }
        let client_cert_sha256 = new
            .client_cert_sha256
            .as_deref()
            .map(normalize_fingerprint)
            .transpose()?;
        let now = now();
        let live = self.inner.store.tokens().await?;
        let live = live.iter().filter(|t| info(t, now).status == TokenStatus::Active);
        for token in live {
            if token.name == name {
                return Err(ServiceError::Conflict(format!(
                    "a live token named '{name}' exists: choose another name or revoke it first"
                )));
            }
            if client_cert_sha256.is_some() && token.client_cert_sha256 == client_cert_sha256 {
                return Err(ServiceError::Conflict(format!(
                    "the live token '{}' is already bound to this client certificate",
                    token.name
                )));
            }
        }
        let minted = mint_token().map_err(ServiceError::Unavailable)?;
        let expires_at = new
            .lifetime_seconds
            .map(|seconds| now + time::Duration::seconds(seconds));
        let record = TokenRecord {
            client_cert_sha256,
            ..token_record(
                name,
                &minted,
                new.scopes,
                &restriction,
                expires_at,
                &creator.actor(),
                now,
            )
        };
        self.inner.store.insert_token(&record).await?;
        self.credentials_changed().await?;
        tracing::info!(token = %record.id, name, scopes = %new.scopes, "created an API token");
        Ok((info(&record, now), minted.token))
    }

    /// Every token within the caller's reach (see [`reaches`]), revoked and expired ones
    /// included.
    pub async fn tokens(&self, caller: &Principal) -> Result<Vec<TokenInfo>, ServiceError> {
        let now = now();
        Ok(self
            .inner
            .store
            .tokens()
            .await?
            .iter()
            .map(|t| info(t, now))
            .filter(|t| reaches(caller, t))
            .collect())
    }

    /// The live token `id_or_name` if it lies within the caller's reach; a token outside it
    /// is answered as absent, so a restricted admin cannot even learn which tokens exist.
    async fn live_token(&self, caller: &Principal, id_or_name: &str) -> Result<TokenRecord, ServiceError> {
        let tokens = self.inner.store.tokens().await?;
        let now = now();
        let mut matching = tokens.into_iter().filter(|t| {
            t.revoked_at.is_none() && (t.id == id_or_name || t.name == id_or_name) && reaches(caller, &info(t, now))
        });
        match (matching.next(), matching.next()) {
            (Some(token), None) => Ok(token),
            (None, _) => Err(ServiceError::NotFound(format!("live token '{id_or_name}'"))),
            (Some(_), Some(_)) => Err(ServiceError::Conflict(format!(
                "several live tokens are named '{id_or_name}': use the id from `certkeeper token list`"
            ))),
        }
    }

    /// Revokes a token by id or name; it stops working at once on this node and within the
    /// refresh interval on the others.
    pub async fn revoke_token(&self, caller: &Principal, id_or_name: &str) -> Result<TokenInfo, ServiceError> {
        let token = self.live_token(caller, id_or_name).await?;
        let record = self.inner.store.revoke_token(&token.id, now()).await?;
        self.credentials_changed().await?;
        tracing::info!(token = %record.id, name = %record.name, "revoked an API token");
        Ok(info(&record, now()))
    }

    /// Gives a token a new secret (same name, scopes and expiry); the old secret stops working.
    pub async fn rotate_token(
        &self,
        caller: &Principal,
        id_or_name: &str,
    ) -> Result<(TokenInfo, String), ServiceError> {
        let token = self.live_token(caller, id_or_name).await?;
        let minted = mint_token().map_err(ServiceError::Unavailable)?;
        let record = self
            .inner
            .store
            .rotate_token(&token.id, &minted.key, &minted.hash, now())
            .await?;
        self.credentials_changed().await?;
        tracing::info!(token = %record.id, name = %record.name, "rotated an API token");
        Ok((info(&record, now()), minted.token))
    }

    /// Reloads every live credential from the store, so tokens made or revoked on another
    /// node take effect here.
    /// After a change of tokens or agents: reloads here, and tells the other nodes to.
    pub(crate) async fn credentials_changed(&self) -> Result<(), ServiceError> {
        self.refresh_credentials().await?;
        if let Err(error) = self.inner.store.publish_credentials_changed().await {
            tracing::warn!(%error, "telling the other nodes about changed credentials failed; they reload within 10 s");
        }
        Ok(())
    }

    pub async fn refresh_credentials(&self) -> Result<(), ServiceError> {
        let credentials = load_credentials(&self.inner.store).await?;
        self.inner.tokens.replace_all(credentials);
        Ok(())
    }

    /// Marks tokens whose lifetime has passed (once each) and records it in the audit trail.
    /// Verification already refuses them by their expiry time; this makes it visible.
    pub async fn sweep_expired_tokens(&self) -> Result<usize, ServiceError> {
        let now = now();
        let expired = self.inner.store.mark_expired_tokens(now).await?;
        let events: Vec<AuditRecord> = expired
            .iter()
            .map(|t| AuditEvent::new("token.expired", "system", "success").resource(format!("tokens/{}", t.id)))
            .map(|e| e.into_record(now))
            .collect();
        if !events.is_empty() {
            self.inner.store.append_audit(&events).await?;
            tracing::info!(count = events.len(), "tokens expired");
        }
        Ok(events.len())
    }

    /// The token bound to a TLS client certificate (already verified by the listener against
    /// the trusted CAs), by the certificate's SHA-256 fingerprint: a subject is whatever the
    /// requester of a certificate asked for, a fingerprint names exactly one certificate. A
    /// certificate that one of our CAs revoked, or that has expired, is refused at once,
    /// whatever the chain check said (the TLS layer knows no revocations).
    pub async fn verify_client_certificate(&self, cert_der: &[u8]) -> Result<Principal, ClientCertificateRejection> {
        let facts = ck_pki::client_certificate_facts(cert_der)
            .map_err(|e| ClientCertificateRejection::Unreadable(e.to_string()))?;
        let now = now();
        if !facts.valid_at(now) {
            return Err(ClientCertificateRejection::OutsideValidity(facts.fingerprint));
        }
        // A partner CA's certificate (`tls.client_ca_file`) is not ours to revoke.
        if let Some((_, ck_store::SerialStatus::Revoked(_))) = self.own_ca_standing(cert_der, &facts.serial).await? {
            return Err(ClientCertificateRejection::Revoked(facts.fingerprint));
        }
        self.inner
            .tokens
            .verify_fingerprint(&facts.fingerprint, now)
            .map_err(|rejection| ClientCertificateRejection::Token(rejection, facts.fingerprint))
    }

    /// `Err(wait)` when `peer` has failed to authenticate too often (API and web UI alike).
    pub fn auth_failure_wait(&self, peer: std::net::IpAddr) -> Result<(), std::time::Duration> {
        self.inner.auth_failures.check(peer)
    }

    /// Counts a failed authentication of `peer` and records it: the first of each address and
    /// minute at once, the rest as one row with their count when the minute is over.
    pub async fn auth_failed(&self, peer: Option<std::net::IpAddr>, event: AuditEvent) -> Result<(), ServiceError> {
        let Some(peer) = peer else {
            return self.audit(event).await;
        };
        let detail = event.detail.clone().unwrap_or_default();
        match self.inner.auth_failures.failed(peer, now(), &detail) {
            crate::auth_failures::FailureRecord::WriteNow => self.audit(event).await,
            crate::auth_failures::FailureRecord::Counted => Ok(()),
        }
    }

    /// Writes the tallies of failed authentications whose minute is over.
    pub(crate) async fn flush_auth_failures(&self) -> Result<(), ServiceError> {
        for event in self.inner.auth_failures.closed_minutes(now()) {
            self.audit(event).await?;
        }
        Ok(())
    }

    /// Appends an audit event; returns once it is committed (batched with concurrent ones).
    /// During a database outage the record waits in memory and is written when the
    /// database is back.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), ServiceError> {
        let record = event.into_record(now());
        if !self.inner.database.is_up() {
            self.inner.database.defer_audit(record);
            return Ok(());
        }
        match self.inner.audit.append(record.clone()).await {
            Err(ServiceError::DatabaseUnreachable { .. }) => {
                self.database_unreachable();
                self.inner.database.defer_audit(record);
                Ok(())
            }
            other => other,
        }
    }

    /// Lists audit events (for unrestricted operators: the trail names every team's
    /// certificates and tokens).
    pub async fn audit_events(
        &self,
        caller: &Principal,
        filter: &AuditFilter,
    ) -> Result<(Vec<AuditRecord>, bool), ServiceError> {
        require_unrestricted(caller, "the audit trail")?;
        Ok(self.inner.store.audit_events(filter).await?)
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

    fn into_record(self, at: OffsetDateTime) -> AuditRecord {
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
