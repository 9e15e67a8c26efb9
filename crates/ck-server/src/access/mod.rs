//! The access service: who is calling. Operator tokens (create, list, revoke, rotate, the
//! expiry sweep), the verifier every request goes through (tokens and TLS client
//! certificates), the failed-authentication limiter shared by every way in, and the audit trail.
//!
//! Owns the live credentials, the limiter and the audit writer; uses the store, the cluster
//! (audit records wait in memory during a database outage) and the PKI service (whether a
//! client certificate was revoked by one of our CAs).

pub(crate) mod audit_csv;
mod audit_queue;
pub(crate) mod auth;
mod auth_failures;
pub(crate) mod tokens;

use std::sync::Arc;

use ck_domain::Scope;
use ck_store::{AuditFilter, AuditRecord, Store, TokenRecord};

use crate::cluster::Cluster;
use crate::pki::Pki;
use crate::signals::Shutdown;
use crate::{ServiceError, now};
use audit_queue::AuditQueue;
use auth::{ClientCertificateRejection, Principal, TokenRejection, TokenVerifier, mint_token};
use auth_failures::{AuthFailures, FailureRecord};
use tokens::{
    AuditEvent, NewToken, TokenInfo, TokenStatus, info, load_credentials, normalize_fingerprint, reaches,
    require_unrestricted, token_record, validate_name,
};

/// Who may do what on this node. Cheap to clone.
#[derive(Clone)]
pub struct Access(Arc<AccessState>);

/// What [`Access`] holds, shared by its clones.
pub struct AccessState {
    store: Store,
    tokens: TokenVerifier,
    /// Requests per second and burst allowed per token (`None`: unlimited).
    token_rate_limit: Option<(f64, u32)>,
    /// Failed authentications per client address, for every way in.
    auth_failures: Arc<AuthFailures>,
    audit: AuditQueue,
    cluster: Cluster,
    pki: Pki,
}

impl std::ops::Deref for Access {
    type Target = AccessState;

    fn deref(&self) -> &AccessState {
        &self.0
    }
}

impl Access {
    pub(crate) fn new(
        store: Store,
        tokens: TokenVerifier,
        token_rate_limit: Option<(f64, u32)>,
        auth_failure_limit: Option<(f64, u32)>,
        cluster: Cluster,
        pki: Pki,
    ) -> Self {
        Self(Arc::new(AccessState {
            audit: AuditQueue::start(store.clone()),
            auth_failures: Arc::new(AuthFailures::new(auth_failure_limit)),
            store,
            tokens,
            token_rate_limit,
            cluster,
            pki,
        }))
    }

    /// Requests per second and burst allowed per token (`None`: unlimited).
    pub fn token_rate_limit(&self) -> Option<(f64, u32)> {
        self.token_rate_limit
    }

    /// Makes a credential (a new agent's) valid on this node at once; other nodes learn of it
    /// through [`Access::credentials_changed`].
    pub(crate) fn add_credential(&self, key: String, credential: auth::Credential) {
        self.tokens.insert(key, credential);
    }

    /// Whose token this is, if it is valid now.
    pub fn verify_token(&self, token: &str) -> Result<Principal, TokenRejection> {
        self.tokens.verify(token, now())
    }

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
        let live = self.store.tokens().await?;
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
        self.store.insert_token(&record).await?;
        self.credentials_changed().await?;
        tracing::info!(token = %record.id, name, scopes = %new.scopes, "created an API token");
        Ok((info(&record, now), minted.token))
    }

    /// Every token within the caller's reach (see [`reaches`]), revoked and expired ones
    /// included.
    pub async fn tokens(&self, caller: &Principal) -> Result<Vec<TokenInfo>, ServiceError> {
        let now = now();
        Ok(self
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
        let tokens = self.store.tokens().await?;
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
        let record = self.store.revoke_token(&token.id, now()).await?;
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
        if let Err(error) = self.store.publish_credentials_changed().await {
            tracing::warn!(%error, "telling the other nodes about changed credentials failed; they reload within 10 s");
        }
        Ok(())
    }

    pub async fn refresh_credentials(&self) -> Result<(), ServiceError> {
        let credentials = load_credentials(&self.store).await?;
        self.tokens.replace_all(credentials);
        Ok(())
    }

    /// Marks tokens whose lifetime has passed (once each) and records it in the audit trail.
    /// Verification already refuses them by their expiry time; this makes it visible.
    pub async fn sweep_expired_tokens(&self) -> Result<usize, ServiceError> {
        let now = now();
        let expired = self.store.mark_expired_tokens(now).await?;
        let events: Vec<AuditRecord> = expired
            .iter()
            .map(|t| AuditEvent::new("token.expired", "system", "success").resource(format!("tokens/{}", t.id)))
            .map(|e| e.into_record(now))
            .collect();
        if !events.is_empty() {
            self.store.append_audit(&events).await?;
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
        if let Some((_, ck_store::SerialStatus::Revoked(_))) = self.pki.own_ca_standing(cert_der, &facts.serial).await?
        {
            return Err(ClientCertificateRejection::Revoked(facts.fingerprint));
        }
        self.tokens
            .verify_fingerprint(&facts.fingerprint, now)
            .map_err(|rejection| ClientCertificateRejection::Token(rejection, facts.fingerprint))
    }

    /// `Err(wait)` when `peer` has failed to authenticate too often (API and web UI alike).
    pub fn auth_failure_wait(&self, peer: std::net::IpAddr) -> Result<(), std::time::Duration> {
        self.auth_failures.check(peer)
    }

    /// Counts a failed authentication of `peer` and records it: the first of each address and
    /// minute at once, the rest as one row with their count when the minute is over.
    pub async fn auth_failed(&self, peer: Option<std::net::IpAddr>, event: AuditEvent) -> Result<(), ServiceError> {
        let Some(peer) = peer else {
            return self.audit(event).await;
        };
        let detail = event.detail.clone().unwrap_or_default();
        match self.auth_failures.failed(peer, now(), &detail) {
            FailureRecord::WriteNow => self.audit(event).await,
            FailureRecord::Counted => Ok(()),
        }
    }

    /// Writes the tallies of failed authentications whose minute is over.
    pub(crate) async fn flush_auth_failures(&self) -> Result<(), ServiceError> {
        for event in self.auth_failures.closed_minutes(now()) {
            self.audit(event).await?;
        }
        Ok(())
    }

    /// Appends an audit event; returns once it is committed (batched with concurrent ones).
    /// During a database outage the record waits in memory and is written when the
    /// database is back.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), ServiceError> {
        let record = event.into_record(now());
        if !self.cluster.database_reachable() {
            self.cluster.defer_audit(record);
            return Ok(());
        }
        match self.audit.append(record.clone()).await {
            Err(ServiceError::DatabaseUnreachable { .. }) => {
                self.cluster.database_unreachable();
                self.cluster.defer_audit(record);
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
        Ok(self.store.audit_events(filter).await?)
    }
}

/// How often every node reloads credentials and sweeps expired tokens: the longest a token
/// revoked on another node keeps working here.
const CREDENTIALS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn credentials_loop(access: Access, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CREDENTIALS_REFRESH) => {}
            () = shutdown.requested() => return,
        }
        if let Err(error) = access.sweep_expired_tokens().await {
            tracing::warn!(%error, "sweeping expired tokens failed; retrying at the next pass");
        }
        if let Err(error) = access.refresh_credentials().await {
            tracing::warn!(%error, "reloading tokens failed; the previous set stays in force");
        }
        if let Err(error) = access.flush_auth_failures().await {
            tracing::warn!(%error, "recording the tally of failed authentications failed");
        }
    }
}
