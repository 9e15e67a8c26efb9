//! The issuers service: the local CA and ACME CAs this node signs with (loaded at start, ACME
//! issuers added while running, or loaded from the database when another node added them),
//! their ACME accounts (rollover, deactivation) and their health checks.
//!
//! Owns the registry of issuers and the challenge answers they share; uses the store, the
//! metrics and the cluster (health checks are the leader's, fenced by its lease).

mod registry;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ck_acme::{AcmeIssuer, ChallengeResponder, SettingsOrigin};
use ck_domain::IssuerId;
use ck_pki::{CaMaterial, LocalCa, PrivateKeyPem};
use ck_store::{IssuerHealth, IssuerRecord, Store};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::{ServerConfig, ServiceError, now};

pub use registry::ChallengeListener;
pub(crate) use registry::acme_settings;
pub(crate) use registry::{AcmeIssuerState, Issuer};
use registry::{Registry, origin_of, stored_issuer_refused};

/// An issuer as the API shows it.
#[derive(Debug, Clone)]
pub struct IssuerInfo {
    /// Id.
    pub id: IssuerId,
    /// Kind: `local` or `acme`.
    pub kind: String,
    /// The local CA's root certificate (what to trust).
    pub ca_pem: Option<String>,
    /// The local CA's expiry.
    pub not_after: Option<OffsetDateTime>,
    /// ACME: the directory URL.
    pub directory: Option<String>,
    /// ACME: the account URL, once registered.
    pub account_url: Option<String>,
    /// ACME: the settings as given, every secret-typed value shown as `"[redacted]"`.
    pub settings: Option<serde_json::Value>,
    /// The last health check.
    pub health: Option<IssuerHealth>,
    /// When it was added.
    pub created_at: Option<OffsetDateTime>,
}

/// The issuers of this node. Cheap to clone.
#[derive(Clone)]
pub struct Issuers(Arc<IssuersState>);

/// What [`Issuers`] holds, shared by its clones.
pub struct IssuersState {
    registry: Arc<Registry>,
    store: Store,
    config: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    cluster: Cluster,
}

impl std::ops::Deref for Issuers {
    type Target = IssuersState;

    fn deref(&self) -> &IssuersState {
        &self.0
    }
}

impl Issuers {
    pub(crate) fn new(
        issuers: BTreeMap<IssuerId, Issuer>,
        store: Store,
        config: Arc<ServerConfig>,
        metrics: Arc<Metrics>,
        cluster: Cluster,
    ) -> Self {
        Self(Arc::new(IssuersState {
            registry: Arc::new(Registry::new(issuers, &store)),
            store,
            config,
            metrics,
            cluster,
        }))
    }

    /// Every issuer id this node knows.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.registry.ids()
    }

    /// Every issuer this node knows.
    pub(crate) fn all(&self) -> Vec<(IssuerId, Issuer)> {
        self.registry.all()
    }

    /// The issuer `id` if this node knows it already (no database read).
    pub(crate) fn known(&self, id: &IssuerId) -> Option<Issuer> {
        self.registry.get(id)
    }

    /// The ACME issuer's account, made ready (restored or registered) on first use.
    pub(crate) async fn ready(&self, state: &AcmeIssuerState) -> Result<AcmeIssuer, ck_acme::AcmeFailure> {
        state.ready(&self.store, &self.registry.responder).await
    }

    /// Every issuer, with its last health check.
    pub async fn issuers(&self) -> Result<Vec<IssuerInfo>, ServiceError> {
        let records: HashMap<String, IssuerRecord> = self
            .store
            .issuers()
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(self
            .registry
            .all()
            .into_iter()
            .map(|(id, issuer)| issuer_info(&id, &issuer, records.get(id.as_str())))
            .collect())
    }

    /// One issuer.
    pub async fn issuer(&self, id: &str) -> Result<IssuerInfo, ServiceError> {
        self.issuers()
            .await?
            .into_iter()
            .find(|issuer| issuer.id.as_str() == id)
            .ok_or_else(|| ServiceError::NotFound(format!("issuer '{id}'")))
    }

    /// Adds an ACME issuer: checks the settings, registers the account with the CA (with EAB
    /// when configured) and stores both. Nothing is stored when the CA refuses.
    pub async fn add_acme_issuer(&self, id: &str, settings: serde_json::Value) -> Result<IssuerInfo, ServiceError> {
        let issuer_id: IssuerId = id.parse().map_err(|e| ServiceError::Invalid(format!("{e}")))?;
        if self.registry.get(&issuer_id).is_some() {
            return Err(ServiceError::Conflict(format!("issuer '{issuer_id}' exists already")));
        }
        let (config, shown) = acme_settings(&settings, ck_acme::SettingsOrigin::Api, &self.config)
            .map_err(|e| ServiceError::Invalid(e.message))?;
        let registered = AcmeIssuer::register(config.clone(), self.registry.responder.clone())
            .await
            .map_err(|failure| {
                // Only a problem document is the CA's answer; anything else never reached it.
                let text = if failure.problem.is_some() {
                    format!("the CA refused the account: {}", failure.message)
                } else {
                    failure.message.clone()
                };
                if failure.transient {
                    ServiceError::Upstream(text)
                } else {
                    ServiceError::Invalid(text)
                }
            })?;
        let now = now();
        let record = IssuerRecord {
            id: issuer_id.to_string(),
            kind: "acme".to_owned(),
            root_cert_pem: None,
            root_key_pem: None,
            intermediate_cert_pem: None,
            intermediate_key_pem: None,
            settings: Some(settings.to_string()),
            account_credentials: None,
            account_url: None,
            health: None,
            created_at: now,
        };
        if !self.store.insert_issuer_if_absent(&record).await? {
            return Err(ServiceError::Conflict(format!("issuer '{issuer_id}' exists already")));
        }
        self.store
            .set_issuer_account(
                issuer_id.as_str(),
                Some(&registered.credentials_json),
                Some(&registered.account_url),
            )
            .await?;
        tracing::info!(issuer = %issuer_id, directory = %config.directory_url(), account = %registered.account_url,
            "added an ACME issuer and registered its account");
        let state = AcmeIssuerState::new(issuer_id.clone(), config, shown, now, Some(registered.issuer));
        self.registry.insert(issuer_id.clone(), Issuer::Acme(Arc::new(state)));
        self.issuer(issuer_id.as_str()).await
    }

    /// Rolls the ACME account key over (RFC 8555 §7.3.5) and stores the new credentials.
    pub async fn rollover_account_key(&self, id: &str) -> Result<IssuerInfo, ServiceError> {
        let (state, acme) = self.ready_acme(id).await?;
        let rolled = acme
            .rollover_key()
            .await
            .map_err(|e| ServiceError::Upstream(e.message))?;
        self.store
            .set_issuer_account(id, Some(&rolled.credentials_json), Some(&rolled.account_url))
            .await?;
        state.replace(Some(rolled.issuer)).await;
        self.account_changed(id).await;
        tracing::info!(issuer = id, "rolled the ACME account key over");
        self.issuer(id).await
    }

    /// Deactivates the ACME account (RFC 8555 §7.3.6). The next order registers a new one.
    pub async fn deactivate_account(&self, id: &str) -> Result<IssuerInfo, ServiceError> {
        let (state, acme) = self.ready_acme(id).await?;
        let url = acme.account_url().to_owned();
        acme.deactivate().await.map_err(|e| ServiceError::Upstream(e.message))?;
        self.store.set_issuer_account(id, None, None).await?;
        state.replace(None).await;
        self.account_changed(id).await;
        tracing::info!(issuer = id, account = %url, "deactivated the ACME account");
        self.issuer(id).await
    }

    /// Another node changed the ACME account of `issuer`: the next order here reloads it.
    pub(crate) async fn account_changed_elsewhere(&self, issuer: &IssuerId, node: &str) {
        if let Some(Issuer::Acme(state)) = self.registry.get(issuer) {
            tracing::info!(%issuer, %node, "another node changed the ACME account; reloading it");
            state.replace(None).await;
        }
    }

    /// Tells the other nodes to reload the account of issuer `id`.
    async fn account_changed(&self, id: &str) {
        if let Err(error) = self.store.publish_account_changed(id, self.cluster.node_id()).await {
            tracing::warn!(issuer = id, %error, "telling the other nodes about the account change failed; \
                restart them if their orders fail");
        }
    }

    /// The ACME issuer `id` with its account ready.
    async fn ready_acme(&self, id: &str) -> Result<(Arc<AcmeIssuerState>, AcmeIssuer), ServiceError> {
        let issuer_id: IssuerId = id.parse().map_err(|e| ServiceError::Invalid(format!("{e}")))?;
        let state = match self.issuer_handle(&issuer_id).await? {
            Issuer::Acme(state) => state,
            Issuer::Local(_) => {
                return Err(ServiceError::Conflict(format!(
                    "issuer '{id}' is the local CA: it has no ACME account to roll over or deactivate"
                )));
            }
        };
        let acme = self
            .ready(&state)
            .await
            .map_err(|e| ServiceError::Upstream(e.message))?;
        Ok((state, acme))
    }

    /// The answers to http-01 and tls-alpn-01 challenges (served by the binary's listeners and
    /// the API's `/.well-known/acme-challenge/`).
    pub fn challenge_responder(&self) -> ChallengeResponder {
        self.registry.responder.clone()
    }

    /// The challenge listeners the issuers need; changes when an issuer is added.
    pub fn challenge_listeners(&self) -> watch::Receiver<BTreeSet<ChallengeListener>> {
        self.registry.subscribe_listeners()
    }

    /// The issuer `id`. One this node does not know yet may have been added through another
    /// node of the cluster: it is loaded from the database then.
    pub(crate) async fn issuer_handle(&self, id: &IssuerId) -> Result<Issuer, ServiceError> {
        if let Some(issuer) = self.registry.get(id) {
            return Ok(issuer);
        }
        if let Some(record) = self.store.issuers().await?.iter().find(|r| r.id == id.as_str())
            && let Some((loaded_id, issuer)) = issuer_from_record(record, &self.config)?
        {
            tracing::info!(issuer = %loaded_id, "loaded an issuer added through another node");
            self.registry.insert_if_absent(loaded_id, issuer);
        }
        self.registry.get(id).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "unknown issuer '{id}' (known: {}); add one with `certkeeper issuer add`",
                self.registry.ids().join(", ")
            ))
        })
    }

    /// One health pass over the issuers, as the leader (its writes are fenced): ACME issuers'
    /// directory and account, and how long the local CA has left.
    pub(crate) async fn check_issuers(&self) {
        for (id, issuer) in self.registry.all() {
            let state = match issuer {
                Issuer::Acme(state) => state,
                Issuer::Local(ca) => {
                    let check = local_ca_check(ca.not_after(), now());
                    if !self.record_issuer_health(&id, check).await {
                        return;
                    }
                    continue;
                }
            };
            let check = match self.ready(&state).await {
                Err(failure) => ck_acme::AccountCheck {
                    healthy: false,
                    detail: failure.message,
                },
                Ok(_) => match self.store.issuer(id.as_str()).await {
                    Ok(Some(record)) => match record.account_credentials {
                        Some(credentials) => ck_acme::AcmeIssuer::check(&state.config, &credentials).await,
                        None => ck_acme::AccountCheck {
                            healthy: false,
                            detail: "no account: it was deactivated; the next order registers a new one".to_owned(),
                        },
                    },
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(issuer = %id, %error, "issuer health: reading the issuer failed");
                        continue;
                    }
                },
            };
            if !self.record_issuer_health(&id, check).await {
                return;
            }
        }
    }

    /// Logs, exports and stores one issuer's health; `false` when this node no longer leads
    /// (the pass stops).
    async fn record_issuer_health(&self, id: &ck_domain::IssuerId, check: ck_acme::AccountCheck) -> bool {
        if !check.healthy {
            tracing::warn!(issuer = %id, detail = %check.detail, "issuer unhealthy");
        }
        self.metrics.issuer_health(id.as_str(), check.healthy);
        let health = ck_store::IssuerHealth {
            healthy: check.healthy,
            detail: check.detail,
            checked_at: now(),
        };
        let Some(fence) = self.cluster.leader_fence() else {
            tracing::info!("no longer the leader: the health pass stops");
            return false;
        };
        match self.store.set_issuer_health(id.as_str(), &health, &fence).await {
            Ok(()) => true,
            Err(ck_store::StoreError::Fenced(reason)) => {
                tracing::warn!(%reason, "another node leads now: the health pass stops");
                false
            }
            Err(error) => {
                tracing::warn!(issuer = %id, %error, "storing the issuer health failed");
                true
            }
        }
    }
}

fn issuer_info(id: &IssuerId, issuer: &Issuer, record: Option<&IssuerRecord>) -> IssuerInfo {
    let health = record.and_then(|r| r.health.clone());
    match issuer {
        Issuer::Local(ca) => IssuerInfo {
            id: id.clone(),
            kind: "local".to_owned(),
            ca_pem: Some(ca.root_pem().to_owned()),
            not_after: Some(ca.not_after()),
            directory: None,
            account_url: None,
            settings: None,
            health,
            created_at: record.map(|r| r.created_at),
        },
        Issuer::Acme(state) => IssuerInfo {
            id: id.clone(),
            kind: "acme".to_owned(),
            ca_pem: None,
            not_after: None,
            directory: Some(state.config.directory_url()),
            account_url: record.and_then(|r| r.account_url.clone()),
            settings: Some(state.shown.clone()),
            health,
            created_at: Some(state.created_at),
        },
    }
}

/// The issuer a stored record describes; `None` for a kind this version does not know.
pub(crate) fn issuer_from_record(
    record: &IssuerRecord,
    config: &ServerConfig,
) -> Result<Option<(IssuerId, Issuer)>, ServiceError> {
    let public_base_url = config.public_base_url.as_deref();
    let id: IssuerId = record
        .id
        .parse()
        .map_err(|e| ServiceError::Unavailable(format!("{e}")))?;
    if record.kind == "acme" {
        let settings: serde_json::Value = serde_json::from_str(record.settings.as_deref().unwrap_or("null"))
            .map_err(|e| ServiceError::Unavailable(format!("issuer {}: stored settings unreadable: {e}", record.id)))?;
        let origin = origin_of(&record.id, config);
        let (acme, shown) = acme_settings(&settings, origin, config).map_err(|e| match origin {
            SettingsOrigin::Api => ServiceError::Unavailable(stored_issuer_refused(&record.id, &e)),
            SettingsOrigin::ConfigFile => ServiceError::Unavailable(format!("issuer {}: {}", record.id, e.message)),
        })?;
        let state = AcmeIssuerState::new(id.clone(), acme, shown, record.created_at, None);
        return Ok(Some((id, Issuer::Acme(Arc::new(state)))));
    }
    if record.kind != "local" {
        tracing::warn!(issuer = %record.id, kind = %record.kind, "unknown issuer kind; ignored");
        return Ok(None);
    }
    let missing = |what: &str| ServiceError::Unavailable(format!("issuer {} has no {what}", record.id));
    let material = CaMaterial {
        root_cert_pem: record
            .root_cert_pem
            .clone()
            .ok_or_else(|| missing("root certificate"))?,
        root_key: PrivateKeyPem::new(record.root_key_pem.clone().ok_or_else(|| missing("root key"))?),
        intermediate_cert_pem: record
            .intermediate_cert_pem
            .clone()
            .ok_or_else(|| missing("intermediate"))?,
        intermediate_key: PrivateKeyPem::new(
            record
                .intermediate_key_pem
                .clone()
                .ok_or_else(|| missing("intermediate key"))?,
        ),
    };
    let url = |path: &str| public_base_url.map(|base| format!("{base}/pki/{path}/{}", record.id));
    let ca = LocalCa::load(&material)
        .map_err(|e| ServiceError::Unavailable(format!("issuer {}: {e}", record.id)))?
        .with_public_urls(url("crl"), url("ocsp"));
    Ok(Some((id, Issuer::Local(Arc::new(ca)))))
}

/// A local CA is unhealthy once its intermediate has less than this left: every leaf it signs
/// ends with the intermediate, so renewals would bring ever shorter certificates.
const LOCAL_CA_MIN_REMAINING: time::Duration = time::Duration::days(30);

/// The health of a local CA whose intermediate expires at `not_after`.
fn local_ca_check(not_after: time::OffsetDateTime, now: time::OffsetDateTime) -> ck_acme::AccountCheck {
    let left = not_after - now;
    if left < LOCAL_CA_MIN_REMAINING {
        ck_acme::AccountCheck {
            healthy: false,
            detail: format!(
                "the CA's intermediate expires at {not_after} ({} days left): the leaves it signs end then too; \
                 replace the local CA before then",
                left.whole_days().max(0)
            ),
        }
    } else {
        ck_acme::AccountCheck {
            healthy: true,
            detail: format!("the CA's intermediate is valid until {not_after}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn a_local_ca_is_unhealthy_in_its_last_thirty_days() {
        let now = datetime!(2026-01-01 0:00 UTC);
        assert!(super::local_ca_check(now + time::Duration::days(31), now).healthy);
        let late = super::local_ca_check(now + time::Duration::days(29), now);
        assert!(!late.healthy);
        assert!(late.detail.contains("29 days left"), "{}", late.detail);
        assert!(!super::local_ca_check(now - time::Duration::days(1), now).healthy);
    }
}
