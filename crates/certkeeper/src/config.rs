//! Server settings: flags and `CERTKEEPER_*` variables (clap) over an optional YAML file over
//! defaults. Parsed and validated once here; the rest of the program gets typed values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ck_domain::{KeyType, NamePolicy, RenewalPolicy, RenewalTrigger};
use ck_pki::CaConfig;
use ck_server::ServerConfig;
use ck_store::DatabaseUrl;
use clap::Args;
use serde::Deserialize;
use time::Duration;

use crate::secrets::{KEK_ENV, KekSource};
pub use crate::tls_listener::ListenerLimits;

/// The default data directory, shared by `serve` and the CLI.
pub const DEFAULT_DATA_DIR: &str = "./certkeeper-data";
/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8989";

/// Settings of `serve`. Each flag also reads a `CERTKEEPER_*` variable and overrides the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML config file (see README for the fields).
    #[arg(long, env = "CERTKEEPER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the SQLite database, the admin token and the node id live [default: ./certkeeper-data].
    #[arg(long, env = "CERTKEEPER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8989].
    #[arg(long, env = "CERTKEEPER_LISTEN")]
    pub listen: Option<String>,
    /// Database URL: sqlite://PATH or postgres://USER[:PASS]@HOST:PORT/DB [default: SQLite in the data dir].
    #[arg(long, env = "CERTKEEPER_DATABASE")]
    pub database: Option<String>,
    /// This node's id on job leases [default: generated once, kept in <data-dir>/node.id].
    #[arg(long, env = "CERTKEEPER_NODE_ID")]
    pub node_id: Option<String>,
    /// The URL relying parties reach this server at, e.g. https://ck.example: issued certificates
    /// then name its CRL (/pki/crl/<issuer>) as their distribution point.
    #[arg(long, env = "CERTKEEPER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The key-encryption key file of the database's secrets [default: <data-dir>/kek, made with
    /// mode 0600 on first start]. CERTKEEPER_KEK (base64) supplies the key itself instead.
    #[arg(long, env = "CERTKEEPER_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) of the API listener; with --tls-key. Without them (and without
    /// tls.auto_names in the config file) the listener is plain HTTP, on loopback only.
    #[arg(long, env = "CERTKEEPER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of the API listener.
    #[arg(long, env = "CERTKEEPER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// More CAs (PEM) whose client certificates the listener accepts, beside the local CA. A
    /// client certificate signs in as the token bound to it with `token create --client-cert`.
    #[arg(long, env = "CERTKEEPER_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    #[arg(long, env = "CERTKEEPER_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Log format: text, json or logfmt [default: text]. Every API request's lines carry its
    /// request id (also sent back as X-Request-Id).
    #[arg(long, env = "CERTKEEPER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log level: error, warn, info, debug or trace [default: info]. For per-module levels set
    /// CERTKEEPER_LOG instead, e.g. CERTKEEPER_LOG=info,ck_acme=debug.
    #[arg(long, value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: Option<String>,
    /// Job worker tasks [default: 2].
    #[arg(long, env = "CERTKEEPER_WORKERS")]
    pub workers: Option<usize>,
    /// API requests per second each token may send (bursts of 4x are allowed; 0: no limit)
    /// [default: 50].
    #[arg(long, env = "CERTKEEPER_TOKEN_RATE_LIMIT")]
    pub token_rate_limit: Option<u32>,
    /// Failed authentications per minute each client address may make after a burst of 20;
    /// then 429 with Retry-After (0: no limit) [default: 20].
    #[arg(long, env = "CERTKEEPER_AUTH_FAILURES_PER_MINUTE")]
    pub auth_failures_per_minute: Option<u32>,
    /// Jobs a worker claims and commits together [default: 64].
    #[arg(long, env = "CERTKEEPER_BATCH_SIZE")]
    pub batch_size: Option<u32>,
    /// Seconds between renewal scans [default: 60].
    #[arg(long, env = "CERTKEEPER_SCHEDULER_INTERVAL_SECONDS")]
    pub scheduler_interval_seconds: Option<u64>,
    /// Key type of the local CA created on first start: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, env = "CERTKEEPER_CA_KEY_TYPE")]
    pub ca_key_type: Option<String>,
    /// Lifetime of new certificates that name none [default: 90].
    #[arg(long, env = "CERTKEEPER_DEFAULT_VALIDITY_DAYS")]
    pub default_validity_days: Option<u32>,
    /// Longest lifetime the local CA signs [default: 397].
    #[arg(long, env = "CERTKEEPER_MAX_VALIDITY_DAYS")]
    pub max_validity_days: Option<u32>,
    /// Only certify names under this domain (repeatable; default: any name).
    #[arg(long, env = "CERTKEEPER_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub allowed_domain: Vec<String>,
    /// Create a new admin token (the old one stops working) and write it to <data-dir>/admin.token.
    #[arg(long)]
    pub reset_admin_token: bool,
}

/// The YAML config file. Unknown fields are errors, so a typo is caught at start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    database: Option<String>,
    node_id: Option<String>,
    insecure_http: Option<bool>,
    log_format: Option<String>,
    workers: Option<usize>,
    token_rate_limit: Option<u32>,
    auth_failures_per_minute: Option<u32>,
    batch_size: Option<u32>,
    scheduler_interval_seconds: Option<u64>,
    outage_read_cache_seconds: Option<u64>,
    #[serde(default)]
    ca: FileCa,
    #[serde(default)]
    certificates: FileCertificates,
    #[serde(default)]
    jobs: FileJobs,
    #[serde(default)]
    acme: FileAcme,
    #[serde(default)]
    pki: FilePki,
    #[serde(default)]
    est: Option<FileEst>,
    #[serde(default)]
    scep: Option<FileScep>,
    #[serde(default)]
    tls: Option<FileTls>,
    /// ACME issuers by id; each value holds the settings of `POST /api/v1/issuers`' `acme`, and
    /// may also hold inline what the API may only name (`dns01`, `http01.listen`, …).
    #[serde(default)]
    acme_issuers: std::collections::BTreeMap<String, serde_json::Value>,
    /// dns-01 providers by name (`kind: rfc2136 | exec | cloudflare` and its settings), for
    /// issuers to name with `dns_provider`: only this file may define what runs a program or
    /// reads a secret file.
    #[serde(default)]
    dns_providers: std::collections::BTreeMap<String, serde_json::Value>,
    /// Challenge listeners by name (`http01: {listen}`, `tls_alpn01: {listen}`), for issuers to
    /// name with `solver`: only this file binds sockets.
    #[serde(default)]
    acme_solvers: std::collections::BTreeMap<String, serde_json::Value>,
    /// Extra roots for private ACME CAs by name: a PEM file each, read at start, for issuers to
    /// name with `ca_bundle`.
    #[serde(default)]
    ca_bundles: std::collections::BTreeMap<String, PathBuf>,
    #[serde(default)]
    notifications: FileNotifications,
    #[serde(default)]
    listener: FileListener,
    #[serde(default)]
    metrics: FileMetrics,
}

/// `listener:`: what one client may hold on the HTTP(S) listener (slowloris bounds).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    header_read_timeout_seconds: Option<f64>,
    idle_timeout_seconds: Option<f64>,
    max_connections: Option<usize>,
    tls_handshake_timeout_seconds: Option<f64>,
}

/// `metrics:`: what `/metrics` shows and how often it reads the store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    /// Series per certificate (id, name, issuer) and per token (name): off by default, as
    /// names reveal a team's certificates to whoever may scrape.
    named_series: Option<bool>,
    /// The cluster-wide gauges are read from the store at most this often.
    refresh_seconds: Option<f64>,
}

/// A timeout in seconds from the config file: positive, at most a day.
fn seconds(field: &str, value: Option<f64>, default: std::time::Duration) -> anyhow::Result<std::time::Duration> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(s)),
        Some(s) => Err(bad(field, format!("{s} is not between 0 (excluded) and 86400 seconds"))),
    }
}

fn listener_limits(file: FileListener) -> anyhow::Result<ListenerLimits> {
    let defaults = ListenerLimits::default();
    let max_connections = file.max_connections.unwrap_or(defaults.max_connections);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(bad("listener.max_connections", "must be between 1 and 1000000"));
    }
    Ok(ListenerLimits {
        header_read_timeout: seconds(
            "listener.header_read_timeout_seconds",
            file.header_read_timeout_seconds,
            defaults.header_read_timeout,
        )?,
        idle_timeout: seconds(
            "listener.idle_timeout_seconds",
            file.idle_timeout_seconds,
            defaults.idle_timeout,
        )?,
        max_connections,
        tls_handshake_timeout: seconds(
            "listener.tls_handshake_timeout_seconds",
            file.tls_handshake_timeout_seconds,
            defaults.tls_handshake_timeout,
        )?,
    })
}

/// `notifications:`: where events go, how hard delivery tries, and when expiry warnings fire.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNotifications {
    /// Days before expiry of the default thresholds [default: 30, 14, 7, 1, 0].
    expiry_alert_days: Option<Vec<u32>>,
    /// Attempts per notification before it is dead [default: 8].
    max_attempts: Option<u32>,
    /// Backoff ceiling before the first retry, doubling after [default: 10].
    retry_base_delay_seconds: Option<f64>,
    /// Longest wait between attempts [default: 1800].
    retry_max_delay_seconds: Option<f64>,
    /// Each notifier: `name`, `type` (webhook, slack, email, command) with its settings, and the
    /// optional route `events` (list) and `labels` (map the certificate must carry).
    #[serde(default)]
    notifiers: Vec<yaml_serde::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJobs {
    max_attempts: Option<u32>,
    lease_seconds: Option<u32>,
    retry_base_delay_seconds: Option<u64>,
    retry_max_delay_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAcme {
    concurrency: Option<usize>,
    health_check_interval_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePki {
    public_url: Option<String>,
    crl_validity_hours: Option<u32>,
}

/// `tls:`: serve HTTPS. Either a certificate of your own, or one the local CA issues itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    /// Names (DNS or IP) for a listener certificate from the local CA, re-issued at every start.
    #[serde(default)]
    auto_names: Vec<String>,
    /// More CAs (PEM) whose client certificates the listener accepts, beside the local CA.
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    /// Lifetime of the `auto_names` certificate [default: 90 days].
    #[serde(default)]
    auto_validity_seconds: Option<u32>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: aligned, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
    /// `key=value` pairs, for Loki, Heroku-style pipelines and grep.
    Logfmt,
}

/// How the listener does TLS.
#[derive(Debug, Clone)]
pub enum TlsSettings {
    /// Certificate chain and key files (PEM).
    Files {
        /// The certificate chain, leaf first.
        cert_file: PathBuf,
        /// The private key.
        key_file: PathBuf,
    },
    /// A certificate from the local CA for these names, with this lifetime; renewed by the
    /// running server at two thirds of it.
    Auto {
        /// The DNS names (and IP addresses) of the certificate.
        names: Vec<String>,
        /// Its lifetime.
        validity: time::Duration,
    },
}

/// `est:`: EST enrollment with HTTP Basic credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEst {
    username: String,
    /// A file holding the enrollment secret (kept out of the config file itself).
    password_file: PathBuf,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    allowed_suffixes: Vec<String>,
    /// Whether a device may enroll a `*.` name (under an allowed suffix); off by default.
    #[serde(default)]
    allow_wildcards: bool,
    #[serde(default)]
    validity_days: Option<u32>,
}

/// `scep:`: SCEP enrollment with a challenge password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScep {
    /// A file holding the challenge password.
    challenge_file: PathBuf,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    allowed_suffixes: Vec<String>,
    /// Whether a device may enroll a `*.` name (under an allowed suffix); off by default.
    #[serde(default)]
    allow_wildcards: bool,
    #[serde(default)]
    validity_days: Option<u32>,
    /// PKIOperations per minute per client address (burst 20); 0: unlimited. Each one costs
    /// an RSA private-key operation, and unlimited queries are what a padding-oracle attack on
    /// the RA key needs.
    #[serde(default)]
    pki_operations_per_minute: Option<u32>,
}

/// What EST and SCEP enrollments may get (`serde(flatten)` would lose `deny_unknown_fields`,
/// hence the fields repeated in both sections).
fn enrollment_policy(
    issuer: Option<String>,
    allowed_suffixes: Vec<String>,
    allow_wildcards: bool,
    validity_days: Option<u32>,
) -> ck_server::EnrollmentPolicy {
    ck_server::EnrollmentPolicy {
        issuer: issuer.unwrap_or_else(|| "local".to_owned()),
        allow_wildcards,
        allowed_suffixes: allowed_suffixes
            .into_iter()
            .map(|s| s.trim().trim_start_matches("*.").trim_matches('.').to_ascii_lowercase())
            .collect(),
        validity_days,
    }
}

/// Reads an enrollment secret from `path` (setting `field`): at least 12 characters.
fn read_enrollment_secret(path: &std::path::Path, field: &str) -> anyhow::Result<String> {
    let secret = std::fs::read_to_string(path)
        .map_err(|e| bad(field, format!("cannot read {}: {e}", path.display())))?
        .trim()
        .to_owned();
    if secret.chars().count() < 12 {
        return Err(bad(field, "the enrollment secret must be at least 12 characters"));
    }
    Ok(secret)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCa {
    key_type: Option<String>,
    name: Option<String>,
    root_validity_days: Option<u32>,
    intermediate_validity_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCertificates {
    default_validity_days: Option<u32>,
    max_validity_days: Option<u32>,
    renew_before_days: Option<u32>,
    renew_at_fraction: Option<f64>,
    renew_jitter: Option<f64>,
    allowed_domains: Option<Vec<String>>,
    deny_wildcards: Option<bool>,
    deny_ip_addresses: Option<bool>,
    /// IP SANs allowed (CIDR); without it, none once `allowed_domains` is set.
    allowed_ip_ranges: Option<Vec<String>>,
}

/// Everything `serve` needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// Where the SQLite database, the admin token, the node id and the server URL live.
    pub data_dir: PathBuf,
    /// The listener's address (port 0: any free port).
    pub listen: SocketAddr,
    /// The store's database.
    pub database: DatabaseUrl,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The control plane's own settings.
    pub server: ServerConfig,
    /// HTTPS instead of plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Where the key-encryption key of the database's secrets comes from.
    pub kek: KekSource,
    /// More CAs whose client certificates the TLS listener accepts.
    pub tls_client_ca: Option<PathBuf>,
    /// Header, idle and handshake timeouts and the connection limit of the listener.
    pub listener: ListenerLimits,
}

fn field<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// The named settings issuers refer to: each DNS provider built once (its files read, its
/// `env` names checked), each listener address parsed, each CA bundle read and parsed.
fn acme_catalog(
    dns_providers: std::collections::BTreeMap<String, serde_json::Value>,
    solvers: std::collections::BTreeMap<String, serde_json::Value>,
    ca_bundles: std::collections::BTreeMap<String, PathBuf>,
) -> anyhow::Result<ck_acme::OperatorCatalog> {
    let mut catalog = ck_acme::OperatorCatalog::default();
    for (name, value) in dns_providers {
        let provider = ck_acme::OperatorCatalog::dns_provider_from_json(&name, &value)
            .map_err(|e| anyhow::anyhow!("invalid setting {}", e.message))?;
        catalog.dns_providers.insert(name, provider);
    }
    for (name, value) in solvers {
        let solver = ck_acme::OperatorCatalog::solver_from_json(&name, &value)
            .map_err(|e| anyhow::anyhow!("invalid setting {}", e.message))?;
        catalog.solvers.insert(name, solver);
    }
    for (name, path) in ca_bundles {
        let field = format!("ca_bundles.{name}");
        let pem =
            std::fs::read_to_string(&path).map_err(|e| bad(&field, format!("cannot read {}: {e}", path.display())))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad(&field, format!("{} holds no PEM certificate", path.display())));
        }
        catalog.ca_bundles.insert(name, pem);
    }
    Ok(catalog)
}

fn bad(field: &str, message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("invalid setting '{field}': {message}")
}

impl Settings {
    /// Merges the flags (and their `CERTKEEPER_*` variables), the YAML file `args.config` and
    /// the defaults, and checks the result.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let data_dir = field(args.data_dir.clone(), file.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let listen_text = field(args.listen.clone(), file.listen, DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "listen",
                format!("'{listen_text}' is not ADDRESS:PORT (e.g. 127.0.0.1:8989)"),
            )
        })?;
        let file_tls = file.tls.unwrap_or_default();
        let tls_client_ca = args.tls_client_ca.clone().or(file_tls.client_ca_file);
        let cert_file = args.tls_cert.clone().or(file_tls.cert_file);
        let key_file = args.tls_key.clone().or(file_tls.key_file);
        let tls = match (cert_file, key_file, file_tls.auto_names) {
            (None, None, names) if names.is_empty() => None,
            (Some(cert_file), Some(key_file), names) if names.is_empty() => {
                Some(TlsSettings::Files { cert_file, key_file })
            }
            (None, None, names) => {
                let seconds = file_tls.auto_validity_seconds.unwrap_or(90 * 86_400);
                if !(60..=397 * 86_400).contains(&seconds) {
                    return Err(bad(
                        "tls.auto_validity_seconds",
                        "must be between 60 and 34300800 (397 days)",
                    ));
                }
                Some(TlsSettings::Auto {
                    names,
                    validity: time::Duration::seconds(i64::from(seconds)),
                })
            }
            _ => {
                return Err(bad(
                    "tls",
                    "give --tls-cert and --tls-key (PEM), or tls.auto_names for a certificate from the local CA",
                ));
            }
        };
        if tls_client_ca.is_some() && tls.is_none() {
            return Err(bad(
                "tls-client-ca",
                "client certificates need TLS: add --tls-cert/--tls-key or tls.auto_names",
            ));
        }
        let insecure_http = args.insecure_http || file.insecure_http.unwrap_or(false);
        if !listen.ip().is_loopback() && !insecure_http && tls.is_none() {
            bail!(
                "refusing to serve plain HTTP on non-loopback address {listen}: tokens would cross the network \
                 in clear text. Bind 127.0.0.1, or pass --insecure-http if a TLS proxy sits in front"
            );
        }
        let database = match args.database.clone().or(file.database) {
            Some(text) => text.parse::<DatabaseUrl>().map_err(|e| bad("database", e))?,
            None => DatabaseUrl::sqlite_file(&data_dir.join("certkeeper.db")),
        };
        let log_format = field(args.log_format.clone(), file.log_format, "text".to_owned());
        let log_format = match log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            "logfmt" => LogFormat::Logfmt,
            other => return Err(bad("log_format", format!("'{other}' (expected text, json or logfmt)"))),
        };

        let node_id = args.node_id.clone().or(file.node_id);
        let mut server = ServerConfig::new(node_id.unwrap_or_default());
        server.workers = field(args.workers, file.workers, server.workers);
        if server.workers == 0 || server.workers > 256 {
            return Err(bad("workers", "must be between 1 and 256"));
        }
        server.token_rate_limit = match args.token_rate_limit.or(file.token_rate_limit) {
            None => server.token_rate_limit,
            Some(0) => None,
            Some(per_second) => Some((f64::from(per_second), per_second.saturating_mul(4))),
        };
        server.auth_failure_limit = match args.auth_failures_per_minute.or(file.auth_failures_per_minute) {
            None => server.auth_failure_limit,
            Some(0) => None,
            Some(per_minute) => Some((f64::from(per_minute) / 60.0, 20)),
        };
        server.batch_size = field(args.batch_size, file.batch_size, server.batch_size);
        if server.batch_size == 0 || server.batch_size > 1000 {
            return Err(bad("batch_size", "must be between 1 and 1000"));
        }
        let interval = field(args.scheduler_interval_seconds, file.scheduler_interval_seconds, 60);
        if interval == 0 {
            return Err(bad("scheduler_interval_seconds", "must be at least 1"));
        }
        server.scheduler_interval = std::time::Duration::from_secs(interval);
        if let Some(seconds) = file.outage_read_cache_seconds {
            if seconds > 86_400 {
                return Err(bad(
                    "outage_read_cache_seconds",
                    "must be at most 86400 (a day); 0 turns the cache off",
                ));
            }
            server.outage_read_cache = std::time::Duration::from_secs(seconds);
        }

        let jobs = file.jobs;
        server.retry.max_attempts = jobs.max_attempts.unwrap_or(server.retry.max_attempts);
        if server.retry.max_attempts == 0 || server.retry.max_attempts > 100 {
            return Err(bad("jobs.max_attempts", "must be between 1 and 100"));
        }
        if let Some(seconds) = jobs.lease_seconds {
            if !(2..=3600).contains(&seconds) {
                return Err(bad("jobs.lease_seconds", "must be between 2 and 3600"));
            }
            server.job_lease = Duration::seconds(i64::from(seconds));
        }
        if let Some(seconds) = jobs.retry_base_delay_seconds {
            server.retry.base_delay = Duration::seconds(i64::try_from(seconds.max(1)).unwrap_or(i64::MAX));
        }
        if let Some(seconds) = jobs.retry_max_delay_seconds {
            server.retry.max_delay = Duration::seconds(i64::try_from(seconds.max(1)).unwrap_or(i64::MAX));
        }
        if server.retry.max_delay < server.retry.base_delay {
            return Err(bad(
                "jobs.retry_max_delay_seconds",
                "must not be below jobs.retry_base_delay_seconds",
            ));
        }
        server.acme_concurrency = file.acme.concurrency.unwrap_or(server.acme_concurrency);
        if server.acme_concurrency == 0 || server.acme_concurrency > 1024 {
            return Err(bad("acme.concurrency", "must be between 1 and 1024"));
        }
        if let Some(seconds) = file.acme.health_check_interval_seconds {
            server.issuer_health_interval = std::time::Duration::from_secs(seconds.max(1));
        }
        if let Some(url) = args.public_url.clone().or(file.pki.public_url) {
            let url = url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
                return Err(bad(
                    "pki.public_url",
                    format!("'{url}' is not an http(s) URL like https://ck.example"),
                ));
            }
            server.public_base_url = Some(url);
        }
        if let Some(hours) = file.pki.crl_validity_hours {
            if hours == 0 || hours > 24 * 30 {
                return Err(bad("pki.crl_validity_hours", "must be between 1 and 720"));
            }
            server.crl_validity = Duration::hours(i64::from(hours));
        }
        if let Some(est) = file.est {
            let password = read_enrollment_secret(&est.password_file, "est.password_file")?;
            if est.username.is_empty() || est.username.contains(':') {
                return Err(bad("est.username", "must be non-empty and without ':'"));
            }
            server.est = Some(ck_server::EstProfile {
                username: est.username,
                password,
                policy: enrollment_policy(est.issuer, est.allowed_suffixes, est.allow_wildcards, est.validity_days),
            });
        }
        if let Some(scep) = file.scep {
            server.scep = Some(ck_server::ScepProfile {
                challenge: read_enrollment_secret(&scep.challenge_file, "scep.challenge_file")?,
                policy: enrollment_policy(
                    scep.issuer,
                    scep.allowed_suffixes,
                    scep.allow_wildcards,
                    scep.validity_days,
                ),
                rate_limit: match scep.pki_operations_per_minute {
                    None => Some(ck_server::ScepProfile::DEFAULT_RATE_LIMIT),
                    Some(0) => None,
                    Some(per_minute) => Some((f64::from(per_minute) / 60.0, 20)),
                },
            });
        }
        server.acme_catalog = acme_catalog(file.dns_providers, file.acme_solvers, file.ca_bundles)?;
        for (id, settings) in file.acme_issuers {
            ck_acme::AcmeIssuerConfig::parse(&settings)
                .and_then(|given| given.resolve(ck_acme::SettingsOrigin::ConfigFile, &server.acme_catalog))
                .map_err(|e| bad(&format!("acme_issuers.{id}"), e.message))?;
            server.acme_issuers.push((id, settings));
        }

        let key_type_text = field(args.ca_key_type.clone(), file.ca.key_type, "ecdsa-p256".to_owned());
        let key_type: KeyType = key_type_text.parse().map_err(|e| bad("ca.key_type", e))?;
        if key_type == KeyType::Ed25519 {
            return Err(bad(
                "ca.key_type",
                "ed25519 CAs are not accepted by most TLS clients; use ecdsa-p256, ecdsa-p384 or rsa-*",
            ));
        }
        let defaults = CaConfig::default();
        let root_days = file.ca.root_validity_days.unwrap_or(3650);
        let intermediate_days = file.ca.intermediate_validity_days.unwrap_or(1825);
        if root_days == 0 || intermediate_days == 0 || intermediate_days > root_days {
            return Err(bad(
                "ca.intermediate_validity_days",
                "must be at least 1 and at most ca.root_validity_days",
            ));
        }
        server.local_ca = CaConfig {
            key_type,
            name: file.ca.name.unwrap_or(defaults.name),
            root_validity: Duration::days(i64::from(root_days)),
            intermediate_validity: Duration::days(i64::from(intermediate_days)),
        };

        let certs = file.certificates;
        let max_days = field(args.max_validity_days, certs.max_validity_days, 397);
        let default_days = field(args.default_validity_days, certs.default_validity_days, 90);
        if max_days == 0 || default_days == 0 || default_days > max_days {
            return Err(bad(
                "certificates.default_validity_days",
                format!("{default_days} must be between 1 and certificates.max_validity_days ({max_days})"),
            ));
        }
        server.max_validity = Duration::days(i64::from(max_days));
        server.default_validity = Duration::days(i64::from(default_days));
        let trigger = match (certs.renew_before_days, certs.renew_at_fraction) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "certificates.renew_before_days",
                    "give renew_before_days or renew_at_fraction, not both",
                ));
            }
            (Some(days), None) => RenewalTrigger::DaysBeforeExpiry(days),
            (None, Some(fraction)) => RenewalTrigger::LifetimeFraction(fraction),
            (None, None) => RenewalPolicy::default().trigger(),
        };
        server.default_renewal = RenewalPolicy::new(trigger, certs.renew_jitter.unwrap_or(0.05))
            .map_err(|e| bad("certificates.renewal", e))?;
        let mut allowed = args.allowed_domain.clone();
        allowed.extend(certs.allowed_domains.unwrap_or_default());
        for domain in &allowed {
            ck_domain::DnsName::parse(domain).map_err(|e| bad("certificates.allowed_domains", e))?;
        }
        server.name_policy = NamePolicy {
            allowed_suffixes: allowed,
            deny_wildcards: certs.deny_wildcards.unwrap_or(false),
            deny_ip_addresses: certs.deny_ip_addresses.unwrap_or(false),
            allowed_ip_ranges: certs
                .allowed_ip_ranges
                .unwrap_or_default()
                .iter()
                .map(|range| range.parse().map_err(|e| bad("certificates.allowed_ip_ranges", e)))
                .collect::<Result<_, _>>()?,
        };
        server.notifications = notification_settings(file.notifications)?;
        server.metrics = ck_server::MetricsSettings {
            named_series: file.metrics.named_series.unwrap_or(false),
            refresh: seconds(
                "metrics.refresh_seconds",
                file.metrics.refresh_seconds,
                ck_server::MetricsSettings::default().refresh,
            )?,
        };
        let listener = listener_limits(file.listener)?;
        let kek = match (args.kek_file.clone(), std::env::var_os(KEK_ENV)) {
            (Some(path), _) => KekSource::File(path),
            (None, Some(_)) => KekSource::Env,
            (None, None) => KekSource::File(data_dir.join("kek")),
        };
        Ok(Self {
            data_dir,
            listen,
            database,
            log_format,
            server,
            tls,
            kek,
            tls_client_ca,
            listener,
        })
    }
}

fn notification_settings(file: FileNotifications) -> anyhow::Result<ck_server::NotificationSettings> {
    let mut settings = ck_server::NotificationSettings::default();
    if let Some(days) = file.expiry_alert_days {
        settings.expiry_thresholds =
            ck_domain::ExpiryThresholds::new(days).map_err(|e| bad("notifications.expiry_alert_days", e))?;
    }
    if let Some(attempts) = file.max_attempts {
        if !(1..=100).contains(&attempts) {
            return Err(bad("notifications.max_attempts", "must be between 1 and 100"));
        }
        settings.retry.max_attempts = attempts;
    }
    let seconds = |field: &str, value: f64| {
        if value.is_finite() && (0.01..=86_400.0).contains(&value) {
            Ok(Duration::seconds_f64(value))
        } else {
            Err(bad(field, "must be between 0.01 and 86400 seconds"))
        }
    };
    if let Some(value) = file.retry_base_delay_seconds {
        settings.retry.base_delay = seconds("notifications.retry_base_delay_seconds", value)?;
    }
    if let Some(value) = file.retry_max_delay_seconds {
        settings.retry.max_delay = seconds("notifications.retry_max_delay_seconds", value)?;
    }
    if settings.retry.max_delay < settings.retry.base_delay {
        return Err(bad(
            "notifications.retry_max_delay_seconds",
            "must not be below notifications.retry_base_delay_seconds",
        ));
    }
    for (index, mut entry) in file.notifiers.into_iter().enumerate() {
        let mut take = |key: &str| entry.remove(key);
        let name = match take("name") {
            Some(yaml_serde::Value::String(name)) if !name.is_empty() => name,
            _ => {
                return Err(bad(
                    &format!("notifications.notifiers[{index}].name"),
                    "give each notifier a name",
                ));
            }
        };
        let field = format!("notifications.notifiers.{name}");
        if settings.notifiers.iter().any(|n| n.name == name) {
            return Err(bad(&field, "the name is used twice"));
        }
        let events: Vec<String> = match take("events") {
            Some(value) => yaml_serde::from_value(value).map_err(|e| bad(&format!("{field}.events"), e))?,
            None => Vec::new(),
        };
        let events = events
            .iter()
            .map(|e| e.parse::<ck_domain::EventKind>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&format!("{field}.events"), e))?;
        let labels: std::collections::BTreeMap<String, String> = match take("labels") {
            Some(value) => yaml_serde::from_value(value).map_err(|e| bad(&format!("{field}.labels"), e))?,
            None => std::collections::BTreeMap::new(),
        };
        let config: ck_notify::NotifierConfig =
            yaml_serde::from_value(yaml_serde::Value::Mapping(entry)).map_err(|e| bad(&field, e))?;
        let notifier = config.build().map_err(|e| bad(&field, e))?;
        settings.notifiers.push(ck_server::NotifierEntry {
            name,
            route: ck_domain::Route {
                events,
                labels: labels.into_iter().collect(),
            },
            notifier: std::sync::Arc::new(notifier),
        });
    }
    Ok(settings)
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    yaml_serde::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `certkeeper serve`'s flags, as the binary parses them.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn load(args: &[&str], yaml: Option<&str>) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["serve"];
        let path = dir.path().join("c.yaml");
        let path_text = path.display().to_string();
        if let Some(yaml) = yaml {
            std::fs::write(&path, yaml).unwrap();
            argv.extend(["--config", path_text.as_str()]);
        }
        argv.extend(args);
        let serve = Serve::try_parse_from(argv).map_err(|e| e.to_string())?;
        Settings::load(&serve.args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_precedence() {
        let settings = load(&[], None).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8989");
        assert!(
            settings
                .database
                .expose()
                .starts_with("sqlite://./certkeeper-data/certkeeper.db")
        );
        let settings = load(
            &["--listen", "127.0.0.1:9000"],
            Some("listen: 127.0.0.1:7000\nworkers: 3\n"),
        )
        .unwrap();
        assert_eq!(settings.listen.port(), 9000, "flags win over the file");
        assert_eq!(settings.server.workers, 3);
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = load(&[], Some("listne: 1\n")).unwrap_err();
        assert!(err.contains("unknown field `listne`"), "{err}");
        let err = load(&[], Some("ca:\n  key_type: dsa\n")).unwrap_err();
        assert!(err.contains("ca.key_type") && err.contains("unknown key type"), "{err}");
        let err = load(&[], Some("certificates:\n  default_validity_days: 500\n")).unwrap_err();
        assert!(err.contains("certificates.default_validity_days"), "{err}");
        let err = load(&["--listen", "0.0.0.0:8989"], None).unwrap_err();
        assert!(err.contains("--insecure-http"), "{err}");
        let err = load(&["--database", "mysql://x"], None).unwrap_err();
        assert!(err.contains("invalid setting 'database'"), "{err}");
    }
}
