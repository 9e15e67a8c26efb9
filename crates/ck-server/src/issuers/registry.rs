//! The issuers the control plane signs with: the local CA and ACME CAs. Loaded at start, and
//! ACME issuers can be added while running.
//!
//! An ACME issuer's account is made ready on first use (restored from stored credentials, or
//! registered and stored), once per node: a mutex keeps concurrent first orders from
//! registering twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use ck_acme::{AcmeFailure, AcmeIssuer, AcmeIssuerConfig, ChallengeKind, ChallengeResponder, SettingsOrigin};
use ck_domain::IssuerId;
use ck_pki::LocalCa;
use ck_store::Store;
use time::OffsetDateTime;
use tokio::sync::watch;

/// A listener the binary should run for challenge answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChallengeListener {
    /// Plain HTTP serving `/.well-known/acme-challenge/<token>`.
    Http01(SocketAddr),
    /// TLS answering ALPN `acme-tls/1`.
    TlsAlpn01(SocketAddr),
}

/// One issuer.
#[derive(Clone)]
pub(crate) enum Issuer {
    Local(Arc<LocalCa>),
    Acme(Arc<AcmeIssuerState>),
}

/// An ACME issuer's settings and, once ready, its account.
pub(crate) struct AcmeIssuerState {
    pub(crate) id: IssuerId,
    /// The settings to run with: names of the config file's entries resolved.
    pub(crate) config: AcmeIssuerConfig,
    /// The settings as given (names, not what they stand for), serialized by type so that every
    /// secret is redacted: what the API shows.
    pub(crate) shown: serde_json::Value,
    pub(crate) created_at: OffsetDateTime,
    ready: tokio::sync::Mutex<Option<AcmeIssuer>>,
}

/// Who gave an issuer's settings. The config file's issuers are written to the store at every
/// start, so an id the file declares is the operator's; every other issuer was added through
/// the API (on this node, another one, or before an upgrade) and is held to the API's rules.
pub(crate) fn origin_of(id: &str, config: &crate::ServerConfig) -> SettingsOrigin {
    if config.acme_issuers.iter().any(|(file_id, _)| file_id == id) {
        SettingsOrigin::ConfigFile
    } else {
        SettingsOrigin::Api
    }
}

/// Checks `settings` as `origin` may give them, resolves the names of the config file's
/// entries, and returns the settings to run with and the view to show.
pub(crate) fn acme_settings(
    settings: &serde_json::Value,
    origin: SettingsOrigin,
    config: &crate::ServerConfig,
) -> Result<(AcmeIssuerConfig, serde_json::Value), AcmeFailure> {
    let given = AcmeIssuerConfig::parse(settings)?;
    let resolved = given.resolve(origin, &config.acme_catalog)?;
    Ok((resolved, given.shown()))
}

/// Why a stored issuer added through the API cannot be loaded any more, and how to keep it:
/// issuers added before the API lost the right to define DNS providers, listeners and file
/// paths may hold them inline, and those must now come from the operator.
pub(crate) fn stored_issuer_refused(id: &str, failure: &AcmeFailure) -> String {
    format!(
        "issuer '{id}' (stored in the database, added through the API) cannot be loaded: {}. Issuers added \
         through the API may only name DNS providers, challenge listeners and CA bundles that the config file \
         defines. To keep this issuer, review its settings (`certkeeper issuer show {id}` on the old version, or \
         the database) and declare it in the config file under acme_issuers.{id} (the file's settings then \
         replace the stored ones), with its DNS provider under dns_providers and its listeners under \
         acme_solvers",
        failure.message.trim_end_matches('.')
    )
}

impl AcmeIssuerState {
    pub(crate) fn new(
        id: IssuerId,
        config: AcmeIssuerConfig,
        shown: serde_json::Value,
        created_at: OffsetDateTime,
        ready: Option<AcmeIssuer>,
    ) -> Self {
        Self {
            id,
            config,
            shown,
            created_at,
            ready: tokio::sync::Mutex::new(ready),
        }
    }

    /// The account, restored or registered on first use.
    pub(crate) async fn ready(&self, store: &Store, responder: &ChallengeResponder) -> Result<AcmeIssuer, AcmeFailure> {
        let mut guard = self.ready.lock().await;
        if let Some(issuer) = &*guard {
            return Ok(issuer.clone());
        }
        let stored = store
            .issuer(self.id.as_str())
            .await
            .map_err(|e| AcmeFailure::local(format!("reading the issuer: {e}"), true))?
            .and_then(|record| record.account_credentials);
        let issuer = match stored {
            Some(credentials) => AcmeIssuer::restore(self.config.clone(), &credentials, responder.clone()).await?,
            None => {
                let registered = AcmeIssuer::register(self.config.clone(), responder.clone()).await?;
                let stored = store
                    .set_issuer_account_if_absent(
                        self.id.as_str(),
                        &registered.credentials_json,
                        &registered.account_url,
                    )
                    .await
                    .map_err(|e| AcmeFailure::local(format!("storing the account: {e}"), true))?;
                if stored {
                    tracing::info!(issuer = %self.id, account = %registered.account_url, "registered the ACME account");
                    registered.issuer
                } else {
                    // Another node registered at the same moment and stored first: use its
                    // account, and close ours so the CA does not keep an unused one.
                    let url = registered.account_url.clone();
                    if let Err(failure) = registered.issuer.deactivate().await {
                        tracing::warn!(issuer = %self.id, account = %url, error = %failure, "deactivating a duplicate account failed");
                    }
                    tracing::info!(issuer = %self.id, account = %url, "another node registered the account first; using that one");
                    let winner = store
                        .issuer(self.id.as_str())
                        .await
                        .map_err(|e| AcmeFailure::local(format!("reading the issuer: {e}"), true))?
                        .and_then(|record| record.account_credentials)
                        .ok_or_else(|| AcmeFailure::local("the issuer's account vanished", true))?;
                    AcmeIssuer::restore(self.config.clone(), &winner, responder.clone()).await?
                }
            }
        };
        *guard = Some(issuer.clone());
        Ok(issuer)
    }

    /// Swaps the account after a key rollover (`Some`) or deactivation (`None`).
    pub(crate) async fn replace(&self, issuer: Option<AcmeIssuer>) {
        *self.ready.lock().await = issuer;
    }

    /// The listeners this issuer needs.
    pub(crate) fn listeners(&self) -> Vec<ChallengeListener> {
        let mut out = Vec::new();
        if let Some(addr) = self.config.http01_listen() {
            out.push(ChallengeListener::Http01(addr));
        }
        if let Some(addr) = self.config.tls_alpn01_listen() {
            out.push(ChallengeListener::TlsAlpn01(addr));
        }
        out
    }

    /// Whether a certificate may use `challenge` with this issuer; the error says how to fix it.
    pub(crate) fn check_challenge(&self, challenge: Option<ChallengeKind>, names: &[String]) -> Result<(), String> {
        self.config
            .challenge_for(challenge, names)
            .map(|_| ())
            .map_err(|message| format!("issuer '{}': {message}", self.id))
    }
}

/// Every issuer by id, the shared challenge answers, and the wanted listeners.
pub(crate) struct Registry {
    map: RwLock<BTreeMap<IssuerId, Issuer>>,
    pub(crate) responder: ChallengeResponder,
    listeners: watch::Sender<BTreeSet<ChallengeListener>>,
}

impl Registry {
    pub(crate) fn new(map: BTreeMap<IssuerId, Issuer>, store: &Store) -> Self {
        let (listeners, _) = watch::channel(BTreeSet::new());
        // Several nodes behind one name: the CA may ask any of them for any order's answer.
        let responder = match store.backend() {
            ck_store::Backend::Postgres => ChallengeResponder::with_shared_http01(Arc::new(StoreHttp01(store.clone()))),
            ck_store::Backend::Sqlite => ChallengeResponder::default(),
        };
        let issuers = Self {
            map: RwLock::new(map),
            responder,
            listeners,
        };
        issuers.publish_listeners();
        issuers
    }

    pub(crate) fn get(&self, id: &IssuerId) -> Option<Issuer> {
        self.map.read().ok()?.get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<(IssuerId, Issuer)> {
        self.map
            .read()
            .map(|map| map.iter().map(|(id, issuer)| (id.clone(), issuer.clone())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.all().into_iter().map(|(id, _)| id.to_string()).collect()
    }

    pub(crate) fn insert(&self, id: IssuerId, issuer: Issuer) {
        if let Ok(mut map) = self.map.write() {
            map.insert(id, issuer);
        }
        self.publish_listeners();
    }

    /// Inserts `issuer` unless the node has one of that id already (whose ACME state, with a
    /// ready account, is worth keeping).
    pub(crate) fn insert_if_absent(&self, id: IssuerId, issuer: Issuer) {
        if let Ok(mut map) = self.map.write() {
            map.entry(id).or_insert(issuer);
        }
        self.publish_listeners();
    }

    pub(crate) fn subscribe_listeners(&self) -> watch::Receiver<BTreeSet<ChallengeListener>> {
        self.listeners.subscribe()
    }

    fn publish_listeners(&self) {
        let wanted: BTreeSet<ChallengeListener> = self
            .all()
            .into_iter()
            .filter_map(|(_, issuer)| match issuer {
                Issuer::Acme(state) => Some(state.listeners()),
                Issuer::Local(_) => None,
            })
            .flatten()
            .collect();
        self.listeners.send_replace(wanted);
    }
}

/// How long a published http-01 answer stays; orders finish (and withdraw it) long before.
const HTTP01_ANSWER_LIFETIME: time::Duration = time::Duration::hours(1);

/// The http-01 answers of every node, in the database.
struct StoreHttp01(Store);

impl ck_acme::SharedHttp01 for StoreHttp01 {
    fn put<'a>(&'a self, token: &'a str, key_authorization: &'a str) -> ck_acme::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let now = crate::now();
            self.0
                .put_http01(token, key_authorization, now, now + HTTP01_ANSWER_LIFETIME)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn get<'a>(&'a self, token: &'a str) -> ck_acme::BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            match self.0.http01(token, crate::now()).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(%error, "reading a shared http-01 answer failed");
                    None
                }
            }
        })
    }

    fn remove<'a>(&'a self, token: &'a str) -> ck_acme::BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(error) = self.0.remove_http01(token).await {
                tracing::warn!(%error, "withdrawing a shared http-01 answer failed; it expires within the hour");
            }
        })
    }
}
