//! Prometheus metrics (text exposition). Counts of certificates and jobs are read from the
//! store at scrape time, so every node reports the cluster's truth, not its own view.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ServiceError;

type LabelPairs = Vec<(String, String)>;

pub(crate) struct Metrics {
    registry: Registry,
    certificates: Family<LabelPairs, Gauge>,
    jobs: Family<LabelPairs, Gauge>,
    issuances: Family<LabelPairs, Counter>,
    job_failures: Family<LabelPairs, Counter>,
    signing_seconds: Histogram,
    issuer_healthy: Family<LabelPairs, Gauge>,
    acme_orders: Family<LabelPairs, Counter>,
    node_role: Gauge,
    lease_transitions: Counter,
    jobs_claimed: Counter,
    database_up: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("certkeeper");
        let certificates = Family::<LabelPairs, Gauge>::default();
        registry.register("certificates", "Managed certificates by status", certificates.clone());
        let jobs = Family::<LabelPairs, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let issuances = Family::<LabelPairs, Counter>::default();
        registry.register(
            "issuances",
            "Certificates issued by this node, by job kind",
            issuances.clone(),
        );
        let job_failures = Family::<LabelPairs, Counter>::default();
        registry.register(
            "job_failures",
            "Failed job attempts on this node, by job kind",
            job_failures.clone(),
        );
        let signing_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "signing_seconds",
            "Time to prepare and sign one certificate",
            signing_seconds.clone(),
        );
        let issuer_healthy = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "issuer_healthy",
            "1 when the issuer's last health check passed (ACME: directory answers, account valid), else 0",
            issuer_healthy.clone(),
        );
        let acme_orders = Family::<LabelPairs, Counter>::default();
        registry.register(
            "acme_orders",
            "ACME orders placed by this node, by issuer and outcome",
            acme_orders.clone(),
        );
        let node_role = Gauge::default();
        // Starts as a follower until the leadership loop takes the lease.
        node_role.set(2);
        registry.register(
            "node_role",
            "This node's role: 1 leader (runs the singleton loops), 2 follower",
            node_role.clone(),
        );
        let lease_transitions = Counter::default();
        registry.register(
            "lease_transitions",
            "Times this node became or stopped being the leader",
            lease_transitions.clone(),
        );
        let jobs_claimed = Counter::default();
        registry.register(
            "jobs_claimed",
            "Jobs this node's workers claimed (each node reports its own share)",
            jobs_claimed.clone(),
        );
        let database_up = Gauge::default();
        database_up.set(1);
        registry.register(
            "database_up",
            "1 while the database answers this node's probe (every second), 0 during an outage",
            database_up.clone(),
        );
        Self {
            node_role,
            lease_transitions,
            jobs_claimed,
            database_up,
            issuer_healthy,
            acme_orders,
            registry,
            certificates,
            jobs,
            issuances,
            job_failures,
            signing_seconds,
        }
    }

    /// This node became (`true`) or stopped being the leader.
    pub(crate) fn leadership(&self, leads: bool) {
        self.node_role.set(if leads { 1 } else { 2 });
        self.lease_transitions.inc();
    }

    pub(crate) fn jobs_claimed(&self, n: usize) {
        self.jobs_claimed.inc_by(n as u64);
    }

    pub(crate) fn database_up(&self, up: bool) {
        self.database_up.set(i64::from(up));
    }

    pub(crate) fn issued(&self, kind: &str) {
        self.issuances
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
    }

    pub(crate) fn job_failed(&self, kind: &str) {
        self.job_failures
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
    }

    pub(crate) fn issuer_health(&self, issuer: &str, healthy: bool) {
        self.issuer_healthy
            .get_or_create(&vec![("issuer".to_owned(), issuer.to_owned())])
            .set(i64::from(healthy));
    }

    pub(crate) fn acme_order(&self, issuer: &str, outcome: &str) {
        self.acme_orders
            .get_or_create(&vec![
                ("issuer".to_owned(), issuer.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
            ])
            .inc();
    }

    pub(crate) fn observe_signing(&self, elapsed: Duration) {
        self.signing_seconds.observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the cluster-wide counts read from the store.
    pub(crate) fn render(
        &self,
        certificates: &[(String, i64)],
        jobs: &[(String, i64)],
    ) -> Result<String, ServiceError> {
        for status in ck_domain::CertificateStatus::ALL {
            let count = certificates
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            self.certificates
                .get_or_create(&vec![("status".to_owned(), status.as_str().to_owned())])
                .set(count);
        }
        for state in ck_domain::JobState::ALL {
            let count = jobs.iter().find(|(s, _)| s == state.as_str()).map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&vec![("state".to_owned(), state.as_str().to_owned())])
                .set(count);
        }
        self.render_local()
    }

    /// The text exposition without reading the store.
    pub(crate) fn render_local(&self) -> Result<String, ServiceError> {
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| ServiceError::Unavailable(format!("metrics encoding: {e}")))?;
        Ok(out)
    }
}
