//! The monitoring service: the `/metrics` exposition, whose cluster-wide gauges it reads from
//! the store (certificates, jobs, agents, tokens, notifications) and the other services.

use std::sync::Arc;

use ck_store::Store;

use crate::agents::{AgentStatus, status_of};
use crate::cluster::Cluster;
use crate::issuers::Issuers;
use crate::metrics::{Inventory, Metrics};
use crate::pki::Pki;
use crate::{ServiceError, now};

/// Renders the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Monitoring(Arc<MonitoringState>);

/// What [`Monitoring`] holds, shared by its clones.
pub struct MonitoringState {
    metrics: Arc<Metrics>,
    store: Store,
    notifiers: Arc<Vec<String>>,
    issuers: Issuers,
    pki: Pki,
    cluster: Cluster,
}

impl std::ops::Deref for Monitoring {
    type Target = MonitoringState;

    fn deref(&self) -> &MonitoringState {
        &self.0
    }
}

impl Monitoring {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        store: Store,
        notifiers: Vec<String>,
        issuers: Issuers,
        pki: Pki,
        cluster: Cluster,
    ) -> Self {
        Self(Arc::new(MonitoringState {
            metrics,
            store,
            notifiers: Arc::new(notifiers),
            issuers,
            pki,
            cluster,
        }))
    }

    /// The OpenMetrics exposition of the control plane's metrics. The cluster-wide gauges are
    /// read from the store when the last read is older than `MetricsSettings::refresh` (and
    /// the database answers); otherwise they are served as they are.
    pub async fn render_metrics(&self) -> Result<String, ServiceError> {
        self.metrics
            .render(
                self.pki.cached_ocsp_responses(),
                self.cluster.database_reachable(),
                || self.inventory(),
            )
            .await
    }

    /// What the store says now, for the cluster-wide gauges.
    async fn inventory(&self) -> Result<Inventory, ServiceError> {
        let store = &self.store;
        let now = now();
        let agents = store.agents().await?;
        let mut agent_counts: Vec<(&'static str, i64)> = Vec::new();
        for status in AgentStatus::ALL {
            let n = agents.iter().filter(|record| status_of(record, now) == status).count();
            agent_counts.push((status.as_str(), i64::try_from(n).unwrap_or(i64::MAX)));
        }
        let token_expiries = store
            .tokens()
            .await?
            .into_iter()
            .filter(|t| t.revoked_at.is_none() && t.expired_at.is_none())
            .filter_map(|t| t.expires_at.map(|at| (t.name, at)))
            .collect();
        let times = if self.metrics.named_series() {
            store.certificate_times().await?
        } else {
            Vec::new()
        };
        Ok(Inventory {
            certificates: store.certificate_counts().await?,
            issuers: self.issuers.ids(),
            times,
            earliest: store.issuer_certificate_times().await?,
            jobs: store.job_counts().await?,
            oldest_runnable_job_seconds: store
                .oldest_runnable_job(now)
                .await?
                .map_or(0.0, |since| (now - since).as_seconds_f64().max(0.0)),
            agents: agent_counts,
            token_expiries,
            notifications: store.notification_counts().await?,
            notifiers: self.notifiers.as_ref().clone(),
        })
    }
}
