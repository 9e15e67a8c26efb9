//! The control plane: the composition of the services, built once at start (see
//! [`crate::bootstrap`]). Each service gets the services it uses in its constructor, so the
//! order below is the dependency order: a service can only reach what was built before it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ck_domain::IssuerId;
use ck_store::Store;

use crate::ServerConfig;
use crate::access::Access;
use crate::access::auth::TokenVerifier;
use crate::agents::Agents;
use crate::certificates::Certificates;
use crate::cluster::Cluster;
use crate::enrollment::est::Est;
use crate::enrollment::scep::Scep;
use crate::issuers::{Issuer, Issuers};
use crate::metrics::Metrics;
use crate::monitoring::Monitoring;
use crate::notifications::Notifications;
use crate::pki::Pki;
use crate::signals::WorkAvailable;

/// Every service of a node. Cheap to clone; the API and the UI take the services they use
/// from it.
#[derive(Clone)]
pub struct ControlPlane {
    /// Leadership and the database's reachability.
    pub cluster: Cluster,
    /// The local CA and ACME issuers, their accounts and health.
    pub issuers: Issuers,
    /// CRLs, OCSP, and the standing of certificates our CAs issued.
    pub pki: Pki,
    /// Tokens, the request verifier, the failed-authentication limiter and the audit trail.
    pub access: Access,
    /// The managed certificates and their jobs.
    pub certificates: Certificates,
    /// Agents and their work.
    pub agents: Agents,
    /// EST enrollment.
    pub est: Est,
    /// SCEP enrollment.
    pub scep: Scep,
    /// Events, notifiers and their queue.
    pub notifications: Notifications,
    /// The `/metrics` exposition.
    pub monitoring: Monitoring,
    /// What the background loops need besides the services (see `crate::jobs`).
    pub(crate) store: Store,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) work: WorkAvailable,
}

impl ControlPlane {
    pub(crate) fn new(
        store: Store,
        config: ServerConfig,
        issuers: BTreeMap<IssuerId, Issuer>,
        tokens: TokenVerifier,
    ) -> Self {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new(config.metrics));
        let work = WorkAvailable::default();
        let cluster = Cluster::new(store.clone(), config.node_id.clone(), metrics.clone());
        let issuers = Issuers::new(issuers, store.clone(), config.clone(), metrics.clone(), cluster.clone());
        let pki = Pki::new(store.clone(), config.clone(), issuers.clone());
        let access = Access::new(
            store.clone(),
            tokens,
            config.token_rate_limit,
            config.auth_failure_limit,
            cluster.clone(),
            pki.clone(),
        );
        let certificates = Certificates::new(
            store.clone(),
            config.clone(),
            issuers.clone(),
            pki.clone(),
            cluster.clone(),
            metrics.clone(),
            work.clone(),
        );
        let agents = Agents::new(
            store.clone(),
            config.clone(),
            access.clone(),
            certificates.clone(),
            work.clone(),
        );
        let est = Est::new(config.clone(), certificates.clone(), issuers.clone(), pki.clone());
        let scep = Scep::new(config.clone(), certificates.clone(), pki.clone(), store.clone());
        let notifications = Notifications::new(store.clone(), config.clone(), metrics.clone(), cluster.clone());
        let notifiers = config.notifications.notifiers.iter().map(|n| n.name.clone()).collect();
        let monitoring = Monitoring::new(
            metrics.clone(),
            store.clone(),
            notifiers,
            issuers.clone(),
            pki.clone(),
            cluster.clone(),
        );
        Self {
            cluster,
            issuers,
            pki,
            access,
            certificates,
            agents,
            est,
            scep,
            notifications,
            monitoring,
            store,
            config,
            metrics,
            work,
        }
    }

    /// The store (readiness checks, closing at shutdown).
    pub fn store(&self) -> &Store {
        &self.store
    }
}
