//! Prometheus metrics (text exposition). Counts of certificates and jobs are read from the
//! store, so every node reports the cluster's truth, not its own view; those reads (full-table
//! counts) run at most once per `MetricsSettings::refresh`, however often and by however many
//! scrapers `/metrics` is asked, and scrapes in between are served from the gauges as they are.
//!
//! Series that name things (a certificate's id and name, a token's name) are off by default
//! (`MetricsSettings::named_series`): whoever may scrape would otherwise learn every team's
//! certificates. Without them, per-issuer earliest expiry and renewal times carry the alerts.

use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ServiceError;

type LabelPairs = Vec<(String, String)>;

/// What `/metrics` shows and how often it reads the store (`metrics:` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Series per certificate (id, name, issuer) and per token (name).
    pub named_series: bool,
    /// The cluster-wide gauges are read from the store at most this often.
    pub refresh: Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            named_series: false,
            refresh: Duration::from_secs(15),
        }
    }
}

pub(crate) struct Metrics {
    registry: Registry,
    settings: MetricsSettings,
    /// When the cluster-wide gauges were last read from the store; held while they are, so
    /// concurrent scrapes share one read.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    earliest_expiry: Family<LabelPairs, Gauge>,
    earliest_renewal: Family<LabelPairs, Gauge>,
    earliest_token_expiry: Family<LabelPairs, Gauge>,
    ocsp_cached: Gauge,
    certificates: Family<LabelPairs, Gauge>,
    jobs: Family<LabelPairs, Gauge>,
    issuances: Family<LabelPairs, Counter>,
    job_failures: Family<LabelPairs, Counter>,
    issuance_seconds: Family<LabelPairs, Histogram, fn() -> Histogram>,
    revocations: Family<LabelPairs, Counter>,
    issuer_healthy: Family<LabelPairs, Gauge>,
    acme_orders: Family<LabelPairs, Counter>,
    node_role: Gauge,
    lease_transitions: Counter,
    jobs_claimed: Counter,
    database_up: Gauge,
    certificate_expiry: Family<LabelPairs, Gauge>,
    certificate_renewal: Family<LabelPairs, Gauge>,
    oldest_runnable_job: Gauge<f64, std::sync::atomic::AtomicU64>,
    agents: Family<LabelPairs, Gauge>,
    token_expiry: Family<LabelPairs, Gauge>,
    acme_requests: Family<LabelPairs, Counter>,
    /// The ACME request counts already added to `acme_requests`, to add only what is new.
    acme_requests_seen: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
    dns_propagation: Histogram,
    notifications: Family<LabelPairs, Gauge>,
    notification_attempts: Family<LabelPairs, Counter>,
}

/// What the store says at scrape time, for the cluster-wide gauges.
pub(crate) struct Inventory {
    /// Certificates by status and issuer.
    pub(crate) certificates: Vec<(String, String, i64)>,
    /// Every issuer id, so each has a series per status (zeros included).
    pub(crate) issuers: Vec<String>,
    /// Per-certificate expiry and renewal times (only with named series).
    pub(crate) times: Vec<ck_store::CertificateTimes>,
    /// Per issuer: the earliest expiry and renewal time of its certificates that are not revoked.
    pub(crate) earliest: Vec<ck_store::IssuerTimes>,
    /// Jobs by state.
    pub(crate) jobs: Vec<(String, i64)>,
    /// How long the longest-waiting runnable job has waited, in seconds.
    pub(crate) oldest_runnable_job_seconds: f64,
    /// Agents by status (online, offline, never, revoked).
    pub(crate) agents: Vec<(&'static str, i64)>,
    /// Live tokens that expire: name and expiry.
    pub(crate) token_expiries: Vec<(String, time::OffsetDateTime)>,
    /// Notifications by notifier and state.
    pub(crate) notifications: Vec<(String, String, i64)>,
    /// Every configured notifier, so each has a series per state (zeros included).
    pub(crate) notifiers: Vec<String>,
}

impl Metrics {
    pub(crate) fn new(settings: MetricsSettings) -> Self {
        let mut registry = Registry::with_prefix("certkeeper");
        let earliest_expiry = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "certificates_earliest_expiry_timestamp_seconds",
            "When the first of an issuer's certificates (not revoked) expires (Unix time), by issuer",
            earliest_expiry.clone(),
        );
        let earliest_renewal = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "certificates_earliest_renewal_window_start_timestamp_seconds",
            "When the first of an issuer's certificates (not revoked) is due for renewal (Unix time), by issuer",
            earliest_renewal.clone(),
        );
        let earliest_token_expiry = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "tokens_earliest_expiry_timestamp_seconds",
            "When the first live API token that expires does (Unix time)",
            earliest_token_expiry.clone(),
        );
        let ocsp_cached = Gauge::default();
        registry.register(
            "ocsp_cached_responses",
            "Signed OCSP responses this node keeps for reuse (bounded per issuer)",
            ocsp_cached.clone(),
        );
        let certificates = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "certificates",
            "Managed certificates by status and issuer",
            certificates.clone(),
        );
        let jobs = Family::<LabelPairs, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let issuances = Family::<LabelPairs, Counter>::default();
        registry.register(
            "issuances",
            "Issuance attempts by this node, by job kind (issue, renew), issuer and outcome (success, failure)",
            issuances.clone(),
        );
        let job_failures = Family::<LabelPairs, Counter>::default();
        registry.register(
            "job_failures",
            "Failed job attempts on this node, by job kind",
            job_failures.clone(),
        );
        // 0.1 ms to about 7 minutes: local signatures and ACME orders on one scale.
        let issuance_seconds = Family::<LabelPairs, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 23))
        });
        registry.register(
            "issuance_duration_seconds",
            "Time to issue one certificate (local signing, or a whole ACME order), by issuer and challenge \
             (none for the local CA)",
            issuance_seconds.clone(),
        );
        let revocations = Family::<LabelPairs, Counter>::default();
        registry.register(
            "revocations",
            "Revocations through this node, by issuer and outcome",
            revocations.clone(),
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
        let certificate_expiry = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate's current version expires (Unix time), by id, name and issuer",
            certificate_expiry.clone(),
        );
        let certificate_renewal = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "certificate_renewal_window_start_timestamp_seconds",
            "When each certificate's renewal is due (Unix time), by id, name and issuer",
            certificate_renewal.clone(),
        );
        let oldest_runnable_job = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "jobs_oldest_runnable_age_seconds",
            "How long the longest-waiting runnable job has waited for a worker (0: none waits)",
            oldest_runnable_job.clone(),
        );
        let agents = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "agents",
            "Agents by status (online, offline, never seen, revoked)",
            agents.clone(),
        );
        let token_expiry = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "When each live API token that expires does (Unix time), by token name",
            token_expiry.clone(),
        );
        let build_info = Family::<LabelPairs, Gauge>::default();
        registry.register("build_info", "This node's version (always 1)", build_info.clone());
        build_info
            .get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        let acme_requests = Family::<LabelPairs, Counter>::default();
        registry.register(
            "acme_requests",
            "ACME requests of this node by endpoint (newOrder, authz, finalize…) and outcome (ok, badNonce, \
             rateLimited…, error)",
            acme_requests.clone(),
        );
        // 10 ms to about 20 minutes.
        let dns_propagation = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register(
            "dns_propagation_seconds",
            "How long dns-01 TXT records took to be seen by the checked resolvers",
            dns_propagation.clone(),
        );
        let notifications = Family::<LabelPairs, Gauge>::default();
        registry.register(
            "notifications",
            "Notifications by notifier and state (pending, sending, delivered, dead)",
            notifications.clone(),
        );
        let notification_attempts = Family::<LabelPairs, Counter>::default();
        registry.register(
            "notification_attempts",
            "Notification delivery attempts by this node, by notifier and outcome (delivered, retry, dead)",
            notification_attempts.clone(),
        );
        let database_up = Gauge::default();
        database_up.set(1);
        registry.register(
            "database_up",
            "1 while the database answers this node's probe (every second), 0 during an outage",
            database_up.clone(),
        );
        Self {
            settings,
            refreshed: tokio::sync::Mutex::new(None),
            earliest_expiry,
            earliest_renewal,
            earliest_token_expiry,
            ocsp_cached,
            node_role,
            lease_transitions,
            jobs_claimed,
            database_up,
            certificate_expiry,
            certificate_renewal,
            oldest_runnable_job,
            agents,
            token_expiry,
            acme_requests,
            acme_requests_seen: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            dns_propagation,
            notifications,
            notification_attempts,
            issuer_healthy,
            acme_orders,
            registry,
            certificates,
            jobs,
            issuances,
            job_failures,
            issuance_seconds,
            revocations,
        }
    }

    /// This node became (`true`) or stopped being the leader.
    pub(crate) fn leadership(&self, leads: bool) {
        self.node_role.set(if leads { 1 } else { 2 });
        self.lease_transitions.inc();
    }

    /// Adds what ck-acme counted since the last scrape.
    fn take_acme_stats(&self) {
        if let Ok(mut seen) = self.acme_requests_seen.lock() {
            for (endpoint, outcome, total) in ck_acme::stats::request_counts() {
                let last = seen.entry((endpoint.to_owned(), outcome.clone())).or_insert(0);
                if total > *last {
                    self.acme_requests
                        .get_or_create(&vec![
                            ("endpoint".to_owned(), endpoint.to_owned()),
                            ("outcome".to_owned(), outcome),
                        ])
                        .inc_by(total - *last);
                    *last = total;
                }
            }
        }
        for seconds in ck_acme::stats::take_dns_waits() {
            self.dns_propagation.observe(seconds);
        }
    }

    pub(crate) fn jobs_claimed(&self, n: usize) {
        self.jobs_claimed.inc_by(n as u64);
    }

    pub(crate) fn notification_attempt(&self, notifier: &str, outcome: &str) {
        self.notification_attempts
            .get_or_create(&vec![
                ("notifier".to_owned(), notifier.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
            ])
            .inc();
    }

    pub(crate) fn database_up(&self, up: bool) {
        self.database_up.set(i64::from(up));
    }

    pub(crate) fn issuance(&self, kind: &str, issuer: &str, outcome: &str) {
        self.issuances
            .get_or_create(&vec![
                ("kind".to_owned(), kind.to_owned()),
                ("issuer".to_owned(), issuer.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
            ])
            .inc();
    }

    pub(crate) fn revocation(&self, issuer: &str, outcome: &str) {
        self.revocations
            .get_or_create(&vec![
                ("issuer".to_owned(), issuer.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
            ])
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

    pub(crate) fn observe_issuance(&self, issuer: &str, challenge: &str, elapsed: Duration) {
        self.issuance_seconds
            .get_or_create(&vec![
                ("issuer".to_owned(), issuer.to_owned()),
                ("challenge".to_owned(), challenge.to_owned()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the cluster-wide gauges to what the store said.
    pub(crate) fn update(&self, inventory: &Inventory) {
        // Rebuilt at every refresh: a deleted certificate or issuer leaves no stale series.
        self.certificates.clear();
        for issuer in &inventory.issuers {
            for status in ck_domain::CertificateStatus::ALL {
                let count = inventory
                    .certificates
                    .iter()
                    .find(|(s, i, _)| s == status.as_str() && i == issuer)
                    .map_or(0, |(_, _, n)| *n);
                self.certificates
                    .get_or_create(&vec![
                        ("status".to_owned(), status.as_str().to_owned()),
                        ("issuer".to_owned(), issuer.clone()),
                    ])
                    .set(count);
            }
        }
        self.certificate_expiry.clear();
        self.certificate_renewal.clear();
        for cert in &inventory.times {
            let labels = vec![
                ("id".to_owned(), cert.id.clone()),
                ("name".to_owned(), cert.name.clone()),
                ("issuer".to_owned(), cert.issuer.clone()),
            ];
            if let Some(at) = cert.not_after {
                self.certificate_expiry.get_or_create(&labels).set(at.unix_timestamp());
            }
            if let Some(at) = cert.renew_at {
                self.certificate_renewal.get_or_create(&labels).set(at.unix_timestamp());
            }
        }
        self.earliest_expiry.clear();
        self.earliest_renewal.clear();
        for bounds in &inventory.earliest {
            let labels = vec![("issuer".to_owned(), bounds.issuer.clone())];
            if let Some(at) = bounds.not_after {
                self.earliest_expiry.get_or_create(&labels).set(at.unix_timestamp());
            }
            if let Some(at) = bounds.renew_at {
                self.earliest_renewal.get_or_create(&labels).set(at.unix_timestamp());
            }
        }
        self.oldest_runnable_job.set(inventory.oldest_runnable_job_seconds);
        for (status, count) in &inventory.agents {
            self.agents
                .get_or_create(&vec![("status".to_owned(), (*status).to_owned())])
                .set(*count);
        }
        self.token_expiry.clear();
        self.earliest_token_expiry.clear();
        if self.settings.named_series {
            for (name, at) in &inventory.token_expiries {
                self.token_expiry
                    .get_or_create(&vec![("name".to_owned(), name.clone())])
                    .set(at.unix_timestamp());
            }
        }
        if let Some(at) = inventory.token_expiries.iter().map(|(_, at)| *at).min() {
            self.earliest_token_expiry
                .get_or_create(&Vec::new())
                .set(at.unix_timestamp());
        }
        for notifier in &inventory.notifiers {
            for state in ck_store::NotificationState::ALL {
                let count = inventory
                    .notifications
                    .iter()
                    .find(|(n, s, _)| n == notifier && s == state.as_str())
                    .map_or(0, |(_, _, n)| *n);
                self.notifications
                    .get_or_create(&vec![
                        ("notifier".to_owned(), notifier.clone()),
                        ("state".to_owned(), state.as_str().to_owned()),
                    ])
                    .set(count);
            }
        }
        for state in ck_domain::JobState::ALL {
            let count = inventory
                .jobs
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&vec![("state".to_owned(), state.as_str().to_owned())])
                .set(count);
        }
    }

    /// The text exposition as the gauges stand (no store read).
    pub(crate) fn render_local(&self) -> Result<String, ServiceError> {
        self.take_acme_stats();
        let mut out = String::new();
        encode(&mut out, &self.registry).map_err(|e| ServiceError::Unavailable(format!("metrics encoding: {e}")))?;
        Ok(out)
    }
}

impl Metrics {
    /// Whether per-certificate series (with names) are exported.
    pub(crate) fn named_series(&self) -> bool {
        self.settings.named_series
    }

    /// The OpenMetrics exposition. The cluster-wide gauges are read through `inventory` when
    /// the last read is older than `MetricsSettings::refresh` and `database_up`; otherwise
    /// they are served as they are.
    pub(crate) async fn render<F, Fut>(
        &self,
        ocsp_cached: usize,
        database_up: bool,
        inventory: F,
    ) -> Result<String, ServiceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Inventory, ServiceError>>,
    {
        self.ocsp_cached.set(i64::try_from(ocsp_cached).unwrap_or(i64::MAX));
        if database_up {
            let mut refreshed = self.refreshed.lock().await;
            if refreshed.is_none_or(|at| at.elapsed() >= self.settings.refresh) {
                self.update(&inventory().await?);
                *refreshed = Some(Instant::now());
            }
        }
        self.render_local()
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers and tools
/// that do not ask for OpenMetrics (`promtool check metrics`, older Prometheus, curl).
/// prometheus-client writes only OpenMetrics, whose counter families are named without the
/// `_total` their samples carry; the text format names them with it and has no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_get_their_total_suffix_in_the_text_format() {
        let open = "# HELP ck_jobs Jobs.\n# TYPE ck_jobs counter\nck_jobs_total 3\n\
                    # HELP ck_up Up.\n# TYPE ck_up gauge\nck_up 1\n# EOF\n";
        assert_eq!(
            super::prometheus_text(open),
            "# HELP ck_jobs_total Jobs.\n# TYPE ck_jobs_total counter\nck_jobs_total 3\n\
             # HELP ck_up Up.\n# TYPE ck_up gauge\nck_up 1\n"
        );
    }
}
