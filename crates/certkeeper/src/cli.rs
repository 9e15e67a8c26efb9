//! Command-line interface: `serve`, the certificate/issuer/job verbs, `secrets` and `agent`.
//! The benchmarks are another program (`certkeeper-bench`, crate `ck-bench`), so the shipped
//! binary carries none of their code.

use std::path::PathBuf;

use certkeeper::config::ServeArgs;
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
    #[arg(long, env = "CERTKEEPER_DATA_DIR", global = true, default_value = certkeeper::config::DEFAULT_DATA_DIR)]
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
    /// Revoke every version not expired yet (older versions stay trusted until they expire),
    /// or one version with --version; the CRL and OCSP say so at once.
    Revoke {
        /// Certificate id.
        id: String,
        /// RFC 5280 reason: unspecified, keyCompromise, caCompromise, affiliationChanged, superseded,
        /// cessationOfOperation, certificateHold, privilegeWithdrawn, aaCompromise.
        #[arg(long)]
        reason: Option<String>,
        /// Only this version (the certificate stays active unless it is the current one).
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a certificate with all its versions.
    ///
    /// A certificate with versions still valid (not expired, not revoked) is refused unless
    /// --revoke or --keep-valid says what to do with them.
    Delete {
        /// Certificate id.
        id: String,
        /// Revoke every version still valid first (reason cessationOfOperation).
        #[arg(long, conflicts_with = "keep_valid")]
        revoke: bool,
        /// Delete anyway: its valid versions stay trusted by clients until they expire.
        #[arg(long)]
        keep_valid: bool,
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
    /// Cancel a pending job: queued, backing off after a failure, or waiting for an agent's
    /// CSR. A running job finishes (or fails) within its lease; a finished one stays as it is.
    Cancel {
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
