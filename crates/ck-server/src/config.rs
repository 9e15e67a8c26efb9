//! Settings of the control-plane services, already validated by the binary's config layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use ck_domain::{ExpiryThresholds, NamePolicy, RenewalPolicy, RetryPolicy, Route};
use ck_notify::Notifier;
use ck_pki::CaConfig;
use time::Duration;

/// What the services need to know. Built once at startup by the binary.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's identity: the owner name on job leases. Stable across restarts, so a
    /// restarted node takes its own unfinished jobs back at once.
    pub node_id: String,
    /// Worker tasks claiming jobs.
    pub workers: usize,
    /// Jobs claimed (and committed) together by one worker.
    pub batch_size: u32,
    /// How long a claimed job stays with its worker before others may take it.
    pub job_lease: Duration,
    /// How often the renewal scheduler looks for due certificates.
    pub scheduler_interval: std::time::Duration,
    /// During a database outage, certificates and chains read at most this long ago are still
    /// served from memory (zero: no cache).
    pub outage_read_cache: std::time::Duration,
    /// Backoff between attempts of a failing job.
    pub retry: RetryPolicy,
    /// How to create the local CA on first start.
    pub local_ca: CaConfig,
    /// Lifetime of a new certificate when the request names none.
    pub default_validity: Duration,
    /// The longest lifetime the local CA signs.
    pub max_validity: Duration,
    /// Which names the local CA may certify.
    pub name_policy: NamePolicy,
    /// The renewal policy of certificates whose request names none.
    pub default_renewal: RenewalPolicy,
    /// ACME orders in flight at once on this node.
    pub acme_concurrency: usize,
    /// How often each ACME issuer's directory and account are checked.
    pub issuer_health_interval: std::time::Duration,
    /// ACME issuers declared in the config file: id and settings. The file is the source of
    /// truth for these; they are written to the store at every start, and they alone may hold
    /// inline DNS providers and listener addresses.
    pub acme_issuers: Vec<(String, serde_json::Value)>,
    /// What the config file defines by name for issuers to refer to (`dns_providers`,
    /// `acme_solvers`, `ca_bundles`): the only way an issuer added through the API gets a
    /// program run, a server file read or a socket bound.
    pub acme_catalog: ck_acme::OperatorCatalog,
    /// The URL relying parties reach this server at (`https://ck.example`): CRL distribution
    /// points and OCSP URLs in issued certificates point there. None: no such extensions.
    pub public_base_url: Option<String>,
    /// How long a CRL is valid (its nextUpdate); a new one is made at half of it, and at once
    /// after a revocation.
    pub crl_validity: Duration,
    /// EST enrollment (`/.well-known/est/`), when configured.
    pub est: Option<EstProfile>,
    /// SCEP enrollment (`/scep`), when configured.
    pub scep: Option<ScepProfile>,
    /// Requests per second each token may send, and the burst above it; `None`: unlimited.
    pub token_rate_limit: Option<(f64, u32)>,
    /// Failed authentications per second each client address may make, and the burst;
    /// `None`: unlimited.
    pub auth_failure_limit: Option<(f64, u32)>,
    /// Notifiers, routes, retries and expiry thresholds.
    pub notifications: NotificationSettings,
    /// What `/metrics` shows and how often it reads the store.
    pub metrics: crate::metrics::MetricsSettings,
}

/// What devices enrolling over EST or SCEP may get.
#[derive(Debug, Clone)]
pub struct EnrollmentPolicy {
    /// The local CA issuer that signs.
    pub issuer: String,
    /// Names must equal one of these or end in `.` + one (empty: any name the policy allows).
    pub allowed_suffixes: Vec<String>,
    /// Whether enrolled certificates may have `*.` names. Off by default: an enrollment secret
    /// is shared by a fleet of devices, and a wildcard would let one device speak for every
    /// name under the suffix.
    pub allow_wildcards: bool,
    /// Lifetime of enrolled certificates (default: the server's default validity).
    pub validity_days: Option<u32>,
}

/// Who may enroll over EST, and what they get.
#[derive(Clone)]
pub struct EstProfile {
    /// HTTP Basic user name.
    pub username: String,
    /// HTTP Basic password: the enrollment secret.
    pub password: String,
    /// What enrolled certificates may be.
    pub policy: EnrollmentPolicy,
}

impl std::fmt::Debug for EstProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstProfile")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

/// SCEP enrollment: the challenge password devices put in their CSR, and what they get.
#[derive(Clone)]
pub struct ScepProfile {
    /// The shared challenge password.
    pub challenge: String,
    /// What enrolled certificates may be.
    pub policy: EnrollmentPolicy,
    /// PKIOperations per second each client address may send, and the burst; `None`:
    /// unlimited (default: `ScepProfile::DEFAULT_RATE_LIMIT`).
    pub rate_limit: Option<(f64, u32)>,
}

impl std::fmt::Debug for ScepProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScepProfile")
            .field("challenge", &"<redacted>")
            .field("policy", &self.policy)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults for a single node.
    pub fn new(node_id: String) -> Self {
        Self {
            notifications: NotificationSettings::default(),
            metrics: crate::metrics::MetricsSettings::default(),
            node_id,
            workers: 2,
            batch_size: 64,
            outage_read_cache: std::time::Duration::from_secs(600),
            job_lease: Duration::minutes(2),
            scheduler_interval: std::time::Duration::from_secs(60),
            retry: RetryPolicy::default(),
            local_ca: CaConfig::default(),
            default_validity: Duration::days(90),
            max_validity: Duration::days(397),
            name_policy: NamePolicy::default(),
            default_renewal: RenewalPolicy::default(),
            acme_concurrency: 32,
            issuer_health_interval: std::time::Duration::from_secs(600),
            acme_issuers: Vec::new(),
            acme_catalog: ck_acme::OperatorCatalog::default(),
            public_base_url: None,
            crl_validity: Duration::hours(24),
            est: None,
            scep: None,
            // Ample for people, scripts and agents (2 requests per 30 s); stops a runaway loop.
            token_rate_limit: Some((50.0, 200)),
            // Enough for a person mistyping; far too few to guess a 256-bit token.
            auth_failure_limit: Some((1.0 / 3.0, 20)),
        }
    }
}

/// One configured notifier and the events it receives.
#[derive(Clone)]
pub struct NotifierEntry {
    /// The name in the configuration, on notification rows and in metrics.
    pub name: String,
    /// Which events it gets.
    pub route: Route,
    /// The channel.
    pub notifier: Arc<Notifier>,
}

/// Notification settings, validated by the binary's config layer.
#[derive(Clone)]
pub struct NotificationSettings {
    /// The notifiers, in configuration order.
    pub notifiers: Vec<NotifierEntry>,
    /// Attempts and backoff of each notification.
    pub retry: RetryPolicy,
    /// The thresholds of certificates that name none.
    pub expiry_thresholds: ExpiryThresholds,
    /// How often each node looks for events to route and notifications to send.
    pub poll_interval: StdDuration,
}

impl Default for NotificationSettings {
    /// No notifiers; 8 attempts over about an hour and a half (10 s doubling, at most 30 min).
    fn default() -> Self {
        Self {
            notifiers: Vec::new(),
            retry: RetryPolicy {
                max_attempts: 8,
                base_delay: Duration::seconds(10),
                max_delay: Duration::minutes(30),
            },
            expiry_thresholds: ExpiryThresholds::default(),
            poll_interval: StdDuration::from_secs(1),
        }
    }
}

impl fmt::Debug for NotificationSettings {
    // Notifiers hold secrets (HMAC keys, SMTP passwords): only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationSettings")
            .field(
                "notifiers",
                &self.notifiers.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .field("expiry_thresholds", &self.expiry_thresholds)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}
