//! Command-line interface: `serve`, the certificate/issuer/job verbs and `bench`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// certkeeper keeps every TLS certificate of an organisation valid.
///
/// Start the control plane with `certkeeper serve`; it creates a private CA and writes an admin
/// token to <data-dir>/admin.token. In another shell, the other commands talk to it:
///
///   certkeeper cert create app.internal --san api.internal --wait
///   certkeeper cert list
///   certkeeper cert get <id> --pem > app.pem
#[derive(Debug, Parser)]
#[command(name = "certkeeper", version, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the control plane (API, job workers, renewal scheduler).
    Serve(ServeArgs),
    /// Create, list, fetch, renew and revoke certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Show issuers and fetch their CA certificates.
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// Register agents (hosts that make their own keys and deploy certificates) and list them.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Show jobs (issuance and renewal work).
    #[command(subcommand)]
    Job(JobCommand),
    /// Show notifications (what was sent to webhooks, Slack, email, commands) and send dead
    /// ones again.
    ///
    ///   certkeeper notification list --state dead
    ///   certkeeper notification requeue 0193…
    #[command(subcommand, verbatim_doc_comment)]
    Notification(NotificationCommand),
    /// Make, list, revoke and rotate API tokens (scoped, expiring, optionally restricted to
    /// some certificates by label or DNS suffix).
    ///
    ///   certkeeper token create --name ci --scope read,create --expires 30d --label team=web
    #[command(subcommand, verbatim_doc_comment)]
    Token(TokenCommand),
    /// Read the audit trail: who did what, when, with which outcome.
    ///
    ///   certkeeper audit --action certificate. --since 2026-11-01T00:00:00Z
    ///   certkeeper audit --csv > audit.csv
    #[command(verbatim_doc_comment)]
    Audit(AuditArgs),
    /// Manage the encryption of secrets at rest (CA keys, server-made keys, ACME account keys,
    /// EAB keys, DNS credentials).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Run an agent on this host: heartbeat, make keys, send CSRs, deploy certificates.
    ///
    ///   certkeeper agent --server https://ck.example:8989 --token-file /etc/certkeeper/agent.token \
    ///       --config /etc/certkeeper/agent.yaml
    ///
    /// The config names the certificates (bound to this agent on the server) and their targets
    /// (files, nginx, haproxy, apache, pkcs12, jks); see README "Agents".
    #[command(verbatim_doc_comment)]
    Agent(AgentArgs),
    /// Measure issuance throughput end to end through the API (in-process server), or with
    /// `bench agents` the load of an agent fleet (heartbeats and polls) on a server process.
    Bench(BenchArgs),
}

/// Settings of `serve`. Each flag also reads a `CERTKEEPER_*` variable and overrides the file.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// YAML config file (see README for the fields).
    #[arg(long, env = "CERTKEEPER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Where the SQLite database, the admin token and the node id live [default: ./certkeeper-data].
    #[arg(long, env = "CERTKEEPER_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8989].
    #[arg(long, env = "CERTKEEPER_LISTEN")]
    pub(crate) listen: Option<String>,
    /// Database URL: sqlite://PATH or postgres://USER[:PASS]@HOST:PORT/DB [default: SQLite in the data dir].
    #[arg(long, env = "CERTKEEPER_DATABASE")]
    pub(crate) database: Option<String>,
    /// This node's id on job leases [default: generated once, kept in <data-dir>/node.id].
    #[arg(long, env = "CERTKEEPER_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// The URL relying parties reach this server at, e.g. https://ck.example: issued certificates
    /// then name its CRL (/pki/crl/<issuer>) as their distribution point.
    #[arg(long, env = "CERTKEEPER_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// The key-encryption key file of the database's secrets [default: <data-dir>/kek, made with
    /// mode 0600 on first start]. CERTKEEPER_KEK (base64) supplies the key itself instead.
    #[arg(long, env = "CERTKEEPER_KEK_FILE")]
    pub(crate) kek_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) of the API listener; with --tls-key. Without them (and without
    /// tls.auto_names in the config file) the listener is plain HTTP, on loopback only.
    #[arg(long, env = "CERTKEEPER_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of the API listener.
    #[arg(long, env = "CERTKEEPER_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// More CAs (PEM) whose client certificates the listener accepts, beside the local CA. A
    /// client certificate signs in as the token bound to it with `token create --client-cert`.
    #[arg(long, env = "CERTKEEPER_TLS_CLIENT_CA")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    #[arg(long, env = "CERTKEEPER_INSECURE_HTTP")]
    pub(crate) insecure_http: bool,
    /// Log format: text, json or logfmt [default: text]. Every API request's lines carry its
    /// request id (also sent back as X-Request-Id).
    #[arg(long, env = "CERTKEEPER_LOG_FORMAT")]
    pub(crate) log_format: Option<String>,
    /// Log level: error, warn, info, debug or trace [default: info]. For per-module levels set
    /// CERTKEEPER_LOG instead, e.g. CERTKEEPER_LOG=info,ck_acme=debug.
    #[arg(long, value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub(crate) log_level: Option<String>,
    /// Job worker tasks [default: 2].
    #[arg(long, env = "CERTKEEPER_WORKERS")]
    pub(crate) workers: Option<usize>,
    /// API requests per second each token may send (bursts of 4x are allowed; 0: no limit)
    /// [default: 50].
    #[arg(long, env = "CERTKEEPER_TOKEN_RATE_LIMIT")]
    pub(crate) token_rate_limit: Option<u32>,
    /// Failed authentications per minute each client address may make after a burst of 20;
    /// then 429 with Retry-After (0: no limit) [default: 20].
    #[arg(long, env = "CERTKEEPER_AUTH_FAILURES_PER_MINUTE")]
    pub(crate) auth_failures_per_minute: Option<u32>,
    /// Jobs a worker claims and commits together [default: 64].
    #[arg(long, env = "CERTKEEPER_BATCH_SIZE")]
    pub(crate) batch_size: Option<u32>,
    /// Seconds between renewal scans [default: 60].
    #[arg(long, env = "CERTKEEPER_SCHEDULER_INTERVAL_SECONDS")]
    pub(crate) scheduler_interval_seconds: Option<u64>,
    /// Key type of the local CA created on first start: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, env = "CERTKEEPER_CA_KEY_TYPE")]
    pub(crate) ca_key_type: Option<String>,
    /// Lifetime of new certificates that name none [default: 90].
    #[arg(long, env = "CERTKEEPER_DEFAULT_VALIDITY_DAYS")]
    pub(crate) default_validity_days: Option<u32>,
    /// Longest lifetime the local CA signs [default: 397].
    #[arg(long, env = "CERTKEEPER_MAX_VALIDITY_DAYS")]
    pub(crate) max_validity_days: Option<u32>,
    /// Only certify names under this domain (repeatable; default: any name).
    #[arg(long, env = "CERTKEEPER_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub(crate) allowed_domain: Vec<String>,
    /// Create a new admin token (the old one stops working) and write it to <data-dir>/admin.token.
    #[arg(long)]
    pub(crate) reset_admin_token: bool,
}

/// How the CLI finds the server.
#[derive(Debug, Args, Clone)]
pub(crate) struct Connection {
    /// Server URL [default: from <data-dir>/server.url, else http://127.0.0.1:8989].
    #[arg(long, env = "CERTKEEPER_URL", global = true)]
    pub(crate) url: Option<String>,
    /// API token [default: <data-dir>/admin.token].
    #[arg(long, env = "CERTKEEPER_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The server's data directory, to find its URL and admin token.
    #[arg(long, env = "CERTKEEPER_DATA_DIR", global = true, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub(crate) data_dir: PathBuf,
    /// Print the API objects as JSON (for scripts).
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the biggest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum CertCommand {
    /// Create a certificate (the server generates the key, or pass --csr to keep the key yourself).
    Create {
        /// Common name (also the first SAN), e.g. app.internal.
        common_name: Option<String>,
        /// Another subject alternative name (DNS name, *.wildcard or IP; repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// PEM CSR file: the server signs your key and never sees it.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Key type of a server-generated key: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096.
        #[arg(long)]
        key_type: Option<String>,
        /// Issuer id.
        #[arg(long)]
        issuer: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Lifetime in days.
        #[arg(long)]
        validity_days: Option<u32>,
        /// Renew this many days before expiry.
        #[arg(long)]
        renew_before_days: Option<u32>,
        /// ACME challenge for this certificate: http-01, tls-alpn-01 or dns-01 [default: the issuer's].
        #[arg(long)]
        challenge: Option<String>,
        /// Bind it to this agent (name or id): the agent makes the key on its host, sends a CSR,
        /// and deploys each version. Issuance waits for the agent's CSR.
        #[arg(long)]
        agent: Option<String>,
        /// Who makes the key: agent (default with --agent) or server (a read-scope agent pulls it).
        #[arg(long)]
        key_source: Option<String>,
        /// Let its leaves serve as TLS client certificates too (extended key usage clientAuth);
        /// without it they are serverAuth only.
        #[arg(long)]
        client_auth: bool,
        /// Wait until the certificate is issued.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// List certificates.
    List {
        /// Filter: pending, active, failed, revoked, expired.
        #[arg(long)]
        status: Option<String>,
        /// Filter by issuer id.
        #[arg(long)]
        issuer: Option<String>,
        /// Only certificates expiring within this many days.
        #[arg(long)]
        expiring_within_days: Option<u32>,
        /// Page size; with --all every page is fetched.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Fetch every page.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a certificate, or print its chain (--pem) and server-held key (--key).
    Get {
        /// Certificate id.
        id: String,
        /// Print the PEM chain (leaf first).
        #[arg(long)]
        pem: bool,
        /// Print the server-generated private key (after the chain with --pem).
        #[arg(long)]
        key: bool,
        /// Which version (default: current).
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Renew now (a new version with a new serial).
    Renew {
        /// Certificate id.
        id: String,
        /// Wait until the renewal finishes.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke the current version.
    Revoke {
        /// Certificate id.
        id: String,
        /// RFC 5280 reason: unspecified, keyCompromise, caCompromise, affiliationChanged, superseded,
        /// cessationOfOperation, certificateHold, privilegeWithdrawn, aaCompromise.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a certificate with all its versions.
    Delete {
        /// Certificate id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List every issued version.
    Versions {
        /// Certificate id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IssuerCommand {
    /// List issuers with their health.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one issuer: directory, account, settings (secrets redacted), last health check.
    Show {
        /// Issuer id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Add an issuer. The server registers the account with the CA before it answers, so a
    /// refused registration (say, a wrong EAB key) is reported here and nothing is stored.
    #[command(subcommand)]
    Add(IssuerAddCommand),
    /// Replace an ACME issuer's account key (RFC 8555 key rollover); the account stays.
    RolloverKey {
        /// Issuer id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Deactivate an ACME issuer's account at the CA. It cannot be reactivated; the next order
    /// registers a new account.
    DeactivateAccount {
        /// Issuer id.
        id: String,
        /// Confirm: deactivation cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print an issuer's root CA certificate (PEM), to install as trusted.
    Ca {
        /// Issuer id.
        #[arg(default_value = "local")]
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum IssuerAddCommand {
    /// An ACME CA (Let's Encrypt, ZeroSSL, a private step-ca or Pebble…).
    ///
    /// Examples:
    ///   certkeeper issuer add acme letsencrypt --directory letsencrypt --email ops@example.com \
    ///       --solver public-http
    ///   certkeeper issuer add acme internal --directory https://ca.internal/acme/directory \
    ///       --ca-bundle ca.pem --challenge dns-01 --dns-provider corp-bind
    ///
    /// DNS providers (--dns-provider), listeners (--solver) and server-side CA bundles
    /// (--server-ca-bundle) are named here and defined in the server's config file.
    #[command(verbatim_doc_comment)]
    Acme(Box<AcmeIssuerArgs>),
}

/// `issuer add acme`.
#[derive(Debug, Args)]
pub(crate) struct AcmeIssuerArgs {
    /// Issuer id: lowercase letters, digits and dashes.
    pub(crate) id: String,
    /// Directory URL, or `letsencrypt` / `letsencrypt-staging`.
    #[arg(long)]
    pub(crate) directory: String,
    /// Contact e-mail for the CA's notices.
    #[arg(long)]
    pub(crate) email: Option<String>,
    /// PEM file of extra roots to trust for the CA's HTTPS endpoint (private ACME CAs); its text
    /// is sent, so the file is read here, not on the server.
    #[arg(long, conflicts_with = "server_ca_bundle")]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// A CA bundle the server's config file defines (`ca_bundles`), by name.
    #[arg(long)]
    pub(crate) server_ca_bundle: Option<String>,
    /// External account binding key id (with --eab-hmac-file).
    #[arg(long, requires = "eab_hmac_file")]
    pub(crate) eab_kid: Option<String>,
    /// File holding the EAB MAC key (base64url, as the CA gave it). A file, so the key stays
    /// out of shell history and `ps`.
    #[arg(long, requires = "eab_kid")]
    pub(crate) eab_hmac_file: Option<PathBuf>,
    /// Default challenge: http-01, tls-alpn-01 or dns-01.
    #[arg(long)]
    pub(crate) challenge: Option<String>,
    /// Challenge listeners the server's config file defines (`acme_solvers`), by name: needed
    /// for http-01 (unless --http01-via-api) and tls-alpn-01. Only the config file binds sockets.
    #[arg(long)]
    pub(crate) solver: Option<String>,
    /// Serve http-01 tokens on the API port only (a proxy forwards /.well-known/acme-challenge/).
    #[arg(long)]
    pub(crate) http01_via_api: bool,
    /// dns-01 provider the server's config file defines (`dns_providers`), by name. Only the
    /// config file defines providers: they run programs and hold credentials.
    #[arg(long)]
    pub(crate) dns_provider: Option<String>,
    /// ACME profile, when the CA offers profiles.
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// When the CA offers several chains, prefer the one leading to the CA with this common
    /// name (e.g. "ISRG Root X1").
    #[arg(long)]
    pub(crate) preferred_chain: Option<String>,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// Register an agent and print its token (shown this once; store it on the agent's host).
    Add {
        /// Unique name, e.g. the host name.
        name: String,
        /// deploy (makes keys, sends CSRs, deploys) or read (pulls server-made keys and deploys
        /// them: the acme-manager-client model).
        #[arg(long, default_value = "deploy")]
        scope: String,
        /// Label KEY=VALUE (repeatable). A restricted token's agent also gets its labels;
        /// certificates are bound only to agents within the binding token's restriction.
        #[arg(long = "label")]
        labels: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List agents: online (heartbeat within 90 s), offline, never seen, or revoked.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke an agent's token (by name or id): the agent is locked out at once; its
    /// certificates stay. Register it again under a new name to give it a new token.
    Revoke {
        /// Agent name or id.
        #[arg(value_name = "AGENT")]
        name_or_id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token and print it (shown this once). A token can only grant scopes its maker has.
    Create {
        /// Unique name among live tokens, e.g. ci-deploy.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read, create, update (renew), delete (delete and revoke),
        /// admin (tokens, issuers, agents, audit), export-key (server-made private keys).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. 30d, 12h, 90m [default: never expires].
        #[arg(long)]
        expires: Option<String>,
        /// Only certificates with this label, KEY=VALUE (repeatable; new certificates get it).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Only certificates whose names all lie under this DNS suffix (repeatable).
        #[arg(long = "name-suffix")]
        name_suffixes: Vec<String>,
        /// This TLS client certificate (PEM file) signs in as the token without sending it; it
        /// is bound by its SHA-256 fingerprint, so only this one certificate does (the server
        /// needs TLS; see serve --tls-client-ca). Issue it with `cert create --client-auth`.
        #[arg(long = "client-cert", conflicts_with = "client_cert_sha256")]
        client_cert: Option<std::path::PathBuf>,
        /// Like --client-cert, by fingerprint (as `openssl x509 -noout -fingerprint -sha256`
        /// prints it).
        #[arg(long = "client-cert-sha256")]
        client_cert_sha256: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List tokens: name, scopes, restriction, status, expiry (never their secrets).
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke a token by name or id; it stops working at once.
    Revoke {
        /// Token name or id.
        #[arg(value_name = "TOKEN")]
        name_or_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Give a token a new secret (same name, scopes, expiry) and print it; the old one stops working.
    Rotate {
        /// Token name or id.
        #[arg(value_name = "TOKEN")]
        name_or_id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Make a new key-encryption key and re-encrypt every secret under it, in one transaction.
    /// Stop the server (every node) first; it takes the same --config, --data-dir, --database
    /// and --kek-file as `serve`. The old key is kept as <kek>.retired-<id> for older backups.
    RotateKek {
        #[command(flatten)]
        serve: ServeArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Only this actor: token:NAME, agent:NAME, system, anonymous.
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// Only this action, or a prefix ending with '.' (certificate.).
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// Only this resource, e.g. certificates/ID.
    #[arg(long)]
    pub(crate) resource: Option<String>,
    /// Only this outcome: success, failure, denied.
    #[arg(long)]
    pub(crate) outcome: Option<String>,
    /// RFC 3339 time: events at or after it.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// RFC 3339 time: events before it.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
    /// Print CSV (for spreadsheets and archives) instead of a table.
    #[arg(long)]
    pub(crate) csv: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// List jobs.
    List {
        /// Filter: pending, running, succeeded, failed, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one job.
    Get {
        /// Job id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NotificationCommand {
    /// List notifications, newest first.
    List {
        /// Filter: pending, sending, delivered, dead.
        #[arg(long)]
        state: Option<String>,
        /// Filter: the notifier's configured name.
        #[arg(long)]
        notifier: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one notification with the document its notifier got.
    Get {
        /// Notification id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Send a dead notification again, with a fresh budget of attempts.
    Requeue {
        /// Notification id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// `certkeeper agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The agent's YAML config.
    #[arg(long, env = "CERTKEEPER_AGENT_CONFIG")]
    pub(crate) config: PathBuf,
    /// Control plane URL [default: `server` in the config].
    #[arg(long, env = "CERTKEEPER_SERVER")]
    pub(crate) server: Option<String>,
    /// The agent's token [default: `token_file` in the config]. Prefer the variable or the file:
    /// command lines are visible to other users.
    #[arg(long, env = "CERTKEEPER_AGENT_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// File holding the agent's token.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// Run one cycle (heartbeat, CSRs, deployments) and exit: for cron or a first check.
    #[arg(long)]
    pub(crate) once: bool,
    /// With --once: print what the cycle did as JSON.
    #[arg(long, requires = "once")]
    pub(crate) json: bool,
}

/// `certkeeper bench`: issuance throughput, or `certkeeper bench agents`: an agent fleet's load.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) command: Option<BenchCommand>,
    /// Database to measure: sqlite (a temp file) or a postgres:// URL (an empty database).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Certificates to issue.
    #[arg(long, default_value_t = 5000)]
    pub(crate) count: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The other measurements of `certkeeper bench`.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Load one control plane (a child process on 127.0.0.1) with a simulated agent fleet: every
    /// agent heartbeats and polls for work once per 30 s. Reports the server's CPU and the poll
    /// latency (a benchmark: it reports, it asserts nothing).
    Agents(BenchAgentsArgs),
    /// Sign CRLs of the local CA with many revoked serials: time and size per CRL, with
    /// `openssl crl` parsing the same CRL as a reference.
    Crl(BenchCrlArgs),
    /// Compare the local CA's OCSP responder (answers from its cache, and answers signed fresh for
    /// requests with a nonce) with `openssl ocsp` as a responder on the same certificates:
    /// responses/s and latency, one target after the other (a benchmark: it asserts nothing).
    /// openssl's responder binds every interface: run it through scripts/bench-ocsp.sh, which
    /// starts it in a private network namespace.
    Ocsp(BenchOcspArgs),
    /// Several `certkeeper serve` nodes on one PostgreSQL: issuance throughput through the API
    /// with 1, 2 and 3 nodes (local CA), then the leader killed with SIGKILL again and again and
    /// the time until another node leads, as a distribution. scripts/bench-cluster.sh starts a
    /// throwaway PostgreSQL for it.
    Cluster(BenchClusterArgs),
    /// What the notification outbox costs: the same signed webhook notifier delivers N messages
    /// to a receiver in this process, once called directly (the baseline) and once through the
    /// control plane (events stored, routed, claimed, sent, recorded); also routing alone.
    Notifications(BenchNotificationsArgs),
    /// How long the web UI's pages take with a large inventory: N certificates issued first,
    /// then every main page fetched again and again with a signed-in session (p50, p99, max),
    /// beside the API's list of 50 as the reference.
    Ui(BenchUiArgs),
}

/// `certkeeper bench ui`.
#[derive(Debug, Args)]
pub(crate) struct BenchUiArgs {
    /// Database to measure: sqlite (a temp file) or a postgres:// URL (an empty database).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Certificates in the inventory (1 to 100000).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) certificates: usize,
    /// Fetches per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub(crate) rounds: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `certkeeper bench notifications`.
#[derive(Debug, Args)]
pub(crate) struct BenchNotificationsArgs {
    /// Database to measure: sqlite (a temp file) or a postgres:// URL (an empty database per run:
    /// give a URL whose database is empty).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Notifications to deliver (1 to 200000).
    #[arg(long, default_value_t = 5000)]
    pub(crate) count: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `certkeeper bench cluster`.
#[derive(Debug, Args)]
pub(crate) struct BenchClusterArgs {
    /// A PostgreSQL URL whose user may create databases; each measurement gets a new one.
    #[arg(long)]
    pub(crate) database: String,
    /// Node counts to measure issuance with (each 1 to 5).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
    pub(crate) nodes: Vec<usize>,
    /// Certificates issued per node count (1 to 100000).
    #[arg(long, default_value_t = 3000)]
    pub(crate) count: usize,
    /// Requests in flight at once, spread over the nodes (1 to 1024).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Leader kills for the failover distribution, on three nodes (0 to 100; 0 skips it).
    #[arg(long, default_value_t = 20)]
    pub(crate) kills: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `certkeeper bench crl`.
#[derive(Debug, Args)]
pub(crate) struct BenchCrlArgs {
    /// Revoked serials per CRL (repeatable; 1 to 5000000 each).
    #[arg(long = "entries", default_values_t = [100_000usize, 1_000_000])]
    pub(crate) entries: Vec<usize>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `certkeeper bench ocsp`.
#[derive(Debug, Args)]
pub(crate) struct BenchOcspArgs {
    /// Certificates to issue (1 to 100000); every 10th is revoked.
    #[arg(long, default_value_t = 1000)]
    pub(crate) certs: usize,
    /// Requests in flight at once (1 to 1024).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Seconds measured per target (1 to 60).
    #[arg(long, default_value_t = 5)]
    pub(crate) seconds: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `certkeeper bench agents`.
#[derive(Debug, Args)]
pub(crate) struct BenchAgentsArgs {
    /// Simulated agents (1 to 50000), each with one certificate bound to it.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) agents: usize,
    /// Seconds of measured steady state (10 to 600), after the setup.
    #[arg(long, default_value_t = 60)]
    pub(crate) duration: u64,
    /// Database of the server: sqlite (a temp file) or a postgres:// URL (an empty database).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::run(args).await,
        Command::Cert(command) => crate::commands::cert(command).await,
        Command::Issuer(command) => crate::commands::issuer(command).await,
        Command::Job(command) => crate::commands::job(command).await,
        Command::Notification(command) => crate::commands::notification(command).await,
        Command::Agents(command) => crate::commands::agents(command).await,
        Command::Token(command) => crate::commands::token(command).await,
        Command::Audit(args) => crate::commands::audit(args).await,
        Command::Secrets(SecretsCommand::RotateKek { serve, json }) => {
            let settings = crate::config::Settings::load(&serve)?;
            crate::secrets::rotate(&settings, json).await
        }
        Command::Agent(args) => crate::agent::run(args).await,
        Command::Bench(mut args) => match args.command.take() {
            Some(BenchCommand::Agents(agents)) => crate::bench_agents::run(agents).await,
            Some(BenchCommand::Crl(crl)) => crate::bench_crl::run(crl).await,
            Some(BenchCommand::Ocsp(ocsp)) => crate::bench_ocsp::run(ocsp).await,
            Some(BenchCommand::Cluster(cluster)) => crate::bench_cluster::run(cluster).await,
            Some(BenchCommand::Notifications(notifications)) => crate::bench_notify::run(notifications).await,
            Some(BenchCommand::Ui(ui)) => crate::bench_ui::run(ui).await,
            None => crate::bench::run(args).await,
        },
    }
}

#[cfg(test)]
mod tests {
    /// clap checks the whole command tree (duplicate names, conflicting flags) only when a
    /// subcommand is run; this runs every check at once.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
