//! The wire types of certkeeper's REST API (`/api/v1`): what clients send and receive, in
//! JSON, and the RFC 9457 problem document every error is reported as.
//!
//! **API boundary.** These are the only `Serialize`/`Deserialize` types of the API; domain types
//! are converted by hand in `ck-api`, so a domain change never silently changes the wire format.
//! Times are RFC 3339 strings in UTC.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The media type of error responses.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// `POST /api/v1/certificates`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCertificate {
    /// Display name; defaults to the common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Subject CN (also the first SAN); defaults to the first SAN or the CSR's CN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names (wildcards allowed as `*.example.com`) and IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// Issuer id; defaults to `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Key type of a server-generated key: ecdsa-p256 (default), ecdsa-p384, ed25519, rsa-2048,
    /// rsa-3072, rsa-4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(ecdsa-p256|ecdsa-p384|ed25519|rsa-2048|rsa-3072|rsa-4096)$")]
    pub key_type: Option<String>,
    /// A PEM PKCS#10 CSR. When given, the server never sees the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Lifetime of each version, in days (at most the server's maximum, 397 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 397)]
    pub validity_days: Option<u32>,
    /// When to renew; defaults to the server's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<Renewal>,
    /// ACME issuers only: `http-01`, `tls-alpn-01` or `dns-01`; defaults to the issuer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(http-01|tls-alpn-01|dns-01)$")]
    pub challenge: Option<String>,
    /// The agent (name or id) that deploys it; by default that agent also makes its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Who makes the key: `agent` (default with an agent of the deploy scope) or `server`
    /// (default otherwise; a read-scope agent then pulls it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(agent|server)$")]
    pub key_source: Option<String>,
    /// Whether its leaves may also serve as TLS client certificates (extended key usage
    /// clientAuth). Off by default: leaves are serverAuth only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_auth: bool,
}

/// A renewal policy: give `renew_before_days` or `renew_at_fraction` (not both).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Renewal {
    /// Renew this many days before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before_days: Option<u32>,
    /// Renew once this fraction of the lifetime has passed (0 < f < 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at_fraction: Option<f64>,
    /// Renewal may start earlier by up to this fraction of the lifetime (0 to 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Days before expiry at which a late renewal is announced (`threshold_crossed`; 0 is the
    /// expiry itself). Thresholds before the renewal time are ignored. Absent: the server's
    /// default (30, 14, 7, 1, 0 unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_alert_days: Option<Vec<u32>>,
}

/// A managed certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    /// Id (UUID).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Subject CN.
    pub common_name: String,
    /// Subject alternative names, CN first.
    pub sans: Vec<String>,
    /// Issuer id.
    pub issuer: String,
    /// Key type.
    pub key_type: String,
    /// `server` (server-generated key), `csr` (client-held key) or `agent` (made by its agent).
    pub key_source: String,
    /// The agent that deploys it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// pending, active, expiring (renewal late: an expiry threshold crossed), failed, revoked or
    /// expired.
    pub status: String,
    /// The current version (0 before the first issuance).
    pub current_version: u32,
    /// The current version's serial (hex).
    pub serial: Option<String>,
    /// SHA-256 fingerprint of the current version (hex).
    pub fingerprint: Option<String>,
    /// Validity start of the current version.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// Expiry of the current version.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// When the scheduler renews it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub renew_at: Option<OffsetDateTime>,
    /// Lifetime of each version, in days.
    pub validity_days: i64,
    /// The renewal policy.
    pub renewal: Renewal,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether its leaves carry clientAuth besides serverAuth.
    #[serde(default)]
    pub client_auth: bool,
    /// The last issuance error, cleared on success.
    pub last_error: Option<String>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The answer to a create or renew: the certificate and the job working on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertificateWithJob {
    /// The certificate.
    #[serde(flatten)]
    pub certificate: Certificate,
    /// The issuance or renewal job.
    pub job: Job,
}

/// One issued version of a certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CertificateVersion {
    /// 1, 2, 3…
    pub version: u32,
    /// Serial (hex).
    pub serial: String,
    /// SHA-256 fingerprint (hex).
    pub fingerprint: String,
    /// Validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The job that issued it.
    pub job_id: String,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The leaf, PEM.
    pub cert_pem: String,
    /// Leaf and intermediates, PEM.
    pub chain_pem: String,
}

/// `POST /api/v1/certificates/{id}/revoke`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeCertificate {
    /// An RFC 5280 reason name (keyCompromise, superseded, …); default unspecified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^(unspecified|keyCompromise|caCompromise|affiliationChanged|superseded|cessationOfOperation|certificateHold|privilegeWithdrawn|aaCompromise)$"
    )]
    pub reason: Option<String>,
    /// Only this version; without it every version not expired yet is revoked (older versions
    /// stay trusted by clients until they expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub version: Option<u32>,
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Id (UUID).
    pub id: String,
    /// issue or renew.
    pub kind: String,
    /// The certificate it works on.
    pub certificate_id: String,
    /// pending, running, succeeded, failed or cancelled.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Not run before this time.
    #[serde(with = "time::serde::rfc3339")]
    pub run_after: OffsetDateTime,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The CA's problem document of the last failed attempt (RFC 7807: type, detail,
    /// subproblems), when an ACME CA sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub problem: Option<serde_json::Value>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// An issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Issuer {
    /// Id.
    pub id: String,
    /// Kind: `local` (the built-in private CA) or `acme`.
    pub kind: String,
    /// Local CA: the signing CA's expiry; no certificate outlives it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_after: Option<OffsetDateTime>,
    /// Local CA: the root certificate to trust (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// ACME: the directory URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// ACME: the account URL at the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_url: Option<String>,
    /// ACME: the settings as given, with every secret shown as `[redacted]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    /// The last health check (ACME: the directory answers and the account is valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<IssuerHealth>,
}

/// An issuer's last health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IssuerHealth {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// What was found.
    pub detail: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
}

/// `POST /api/v1/issuers`: adds an ACME issuer and registers its account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIssuer {
    /// Id: lowercase letters, digits and dashes (e.g. `letsencrypt`).
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub id: String,
    /// `acme`.
    #[schema(pattern = "^acme$")]
    pub kind: String,
    /// The ACME settings: `directory` (URL or `letsencrypt`, `letsencrypt-staging`), `email`,
    /// `eab` {kid, hmac}, `ca_bundle_pem` (PEM text), `challenge`, `http01` {via_api},
    /// `profile`, `preferred_chain`, and by name what only the server's config file defines:
    /// `dns_provider` (`dns_providers`), `solver` (challenge listeners, `acme_solvers`),
    /// `ca_bundle` (`ca_bundles`). Inline DNS providers, listener addresses and file paths are
    /// refused (400): they would run programs, read files or bind sockets on the server.
    #[schema(value_type = Object)]
    pub acme: serde_json::Value,
}

/// A page of a list; pass `next_cursor` as `cursor` to get the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Set when more items follow.
    pub next_cursor: Option<String>,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, and how to fix it.
    pub detail: String,
}

/// `POST /api/v1/agents`: registers an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Unique name, e.g. the host name: letters, digits, `-`, `_`, `.`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    /// `deploy` (default: makes keys, sends CSRs) or `read` (pulls server-generated keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(deploy|read)$")]
    pub scope: Option<String>,
    /// Labels. A token restricted to some labels reaches only agents that carry them: a
    /// restricted caller's agent gets its restriction's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    /// Id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// `deploy` or `read`.
    pub scope: String,
    /// Labels (a token restricted to some labels reaches only agents that carry them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `online`, `offline` (no heartbeat for 90 s), `never-seen` or `revoked`.
    pub status: String,
    /// Reported host name.
    pub hostname: Option<String>,
    /// Reported operating system.
    pub os: Option<String>,
    /// Reported CPU architecture.
    pub arch: Option<String>,
    /// Reported agent version.
    pub version: Option<String>,
    /// Last heartbeat.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Registration time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The answer to `POST /api/v1/agents`: the token is shown this once.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedAgent {
    /// The agent.
    pub agent: Agent,
    /// Its token (`Authorization: Bearer`), valid only for `/api/v1/agent/…`. Store it now.
    pub token: String,
}

/// `POST /api/v1/agent/heartbeat`, sent by an agent about its host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Operating system.
    #[serde(default)]
    pub os: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Agent version.
    #[serde(default)]
    pub version: Option<String>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// The agent as the server sees it now.
    pub agent: Agent,
    /// Seconds until the next heartbeat and poll.
    pub poll_interval_seconds: u64,
}

/// `GET /api/v1/agent/work`: the agent's certificates and what each needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentWork {
    /// Seconds until the next poll.
    pub poll_interval_seconds: u64,
    /// The certificates bound to the agent.
    pub certificates: Vec<AgentWorkItem>,
}

/// One certificate in an agent's work list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentWorkItem {
    /// Certificate id.
    pub id: String,
    /// Its name (what the agent's configuration refers to).
    pub name: String,
    /// Every name, the common name first (what a CSR must ask for).
    pub sans: Vec<String>,
    /// Its labels (for label selectors in the agent's configuration).
    pub labels: BTreeMap<String, String>,
    /// `agent` (the agent makes keys) or `server` (the bundle carries the key).
    pub key_source: String,
    /// The key type the certificate was created with (a hint for the agent's default).
    pub key_type: String,
    /// pending, active, expiring (renewal late: an expiry threshold crossed), failed, revoked or
    /// expired.
    pub status: String,
    /// The current version (0 before the first issuance).
    pub version: u32,
    /// The current version's leaf fingerprint (SHA-256, hex).
    pub fingerprint: Option<String>,
    /// The current version's expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// Its pending or running job.
    pub job: Option<String>,
    /// A job waits for the agent's CSR: make a key and send one now.
    pub csr_wanted: bool,
}

/// `POST /api/v1/agent/certificates/{id}/csr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCsr {
    /// A PEM PKCS#10 CSR with exactly the certificate's names.
    pub csr: String,
}

/// `GET /api/v1/agent/certificates/{id}/bundle`: what the agent deploys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentBundle {
    /// Certificate id.
    pub certificate_id: String,
    /// Its name.
    pub name: String,
    /// The version.
    pub version: u32,
    /// The leaf fingerprint (SHA-256, hex).
    pub fingerprint: String,
    /// Leaf and intermediates, PEM.
    pub chain_pem: String,
    /// The key, PEM: only for server-made keys (read-scope agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// `POST /api/v1/agent/certificates/{id}/deployments`: how a deployment went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentReport {
    /// The version deployed.
    pub version: u32,
    /// The leaf fingerprint deployed.
    pub fingerprint: String,
    /// The targets (their names).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Why it failed, with the failing command's stderr; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of a call that takes no parameters in its body: `{}` (or nothing, with
/// `Content-Type: application/json`). It is JSON all the same, so that a page on another site
/// cannot send the call without a CORS preflight, which the API never grants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmptyBody {}

/// `POST /api/v1/tokens`: a new API token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Unique among live tokens: letters, digits, `-`, `_`, `.`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Any of read, create, update, delete, admin, export-key; at most the caller's own.
    #[schema(min_items = 1)]
    pub scopes: Vec<String>,
    /// Lifetime such as `30d`, `12h`, `90m`; never expires when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[1-9][0-9]{0,5}[smhdw]$")]
    pub expires_in: Option<String>,
    /// Only certificates carrying all these labels (new certificates get them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Only certificates whose names all lie under one of these DNS suffixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_suffixes: Vec<String>,
    /// The SHA-256 fingerprint (hex of the DER; colons allowed) of the one TLS client
    /// certificate (from a CA the server trusts for clients) that signs in as this token
    /// without sending it. A certificate is bound by fingerprint, never by its subject, which
    /// whoever requests a certificate chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(sha256:)?[0-9A-Fa-f:]{64,95}$")]
    pub client_cert_sha256: Option<String>,
}

/// An API token (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// Id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// The token's public beginning, `ck_<key>_`, to match a secret scanner's finding.
    pub prefix: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Labels a certificate must carry to be reached.
    pub labels: BTreeMap<String, String>,
    /// DNS suffixes a certificate's names must lie under to be reached.
    pub name_suffixes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When its secret was last replaced.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// Who made it.
    pub created_by: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The subject it was mapped to by earlier versions (no longer honoured: bind the
    /// certificate by fingerprint).
    #[serde(default)]
    pub client_subject: Option<String>,
    /// The fingerprint of the TLS client certificate that signs in as it.
    #[serde(default)]
    pub client_cert_sha256: Option<String>,
}

/// A token with its secret: the answer to a create or rotate, shown this once.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token (`Authorization: Bearer …`). Store it now: it cannot be shown again.
    pub token: String,
    /// What it is.
    pub details: Token,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Id (UUIDv7, time-ordered; the cursor).
    pub id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `token:<name>`, `agent:<name>`, `system` or `anonymous`.
    pub actor: String,
    /// What: `certificate.create`, `certificate.issued`, `token.revoke`, `auth.failure`…
    pub action: String,
    /// On what: `certificate/<id>`, `token/<id>`…
    pub resource: Option<String>,
    /// The request id (also in the `x-request-id` response header).
    pub request_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// The HTTP status of an API call.
    pub status: Option<u16>,
    /// The client's address.
    pub client: Option<String>,
    /// SHA-256 of the request body (the body itself is never stored).
    pub body_sha256: Option<String>,
    /// A short explanation.
    pub detail: Option<String>,
}

/// `GET /api/v1/token`: what the presented token is and may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// How the audit trail names the caller: `token:<name>` or `agent:<name>`.
    pub actor: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Labels a certificate must carry to be reached (empty: no restriction).
    pub labels: BTreeMap<String, String>,
    /// DNS suffixes a certificate's names must lie under (empty: no restriction).
    pub name_suffixes: Vec<String>,
}

// The answers that carry a token print it redacted, so a `{:?}` in a log never leaks it.
impl std::fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAgent")
            .field("agent", &self.agent)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("details", &self.details)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `GET /api/v1/cluster`: the nodes on this database and the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    /// The node that answered.
    pub node_id: String,
    /// The node holding the leader lease (it runs the renewal scan and health checks), if
    /// the lease is live.
    pub leader: Option<String>,
    /// The lease's fencing epoch: it grows with every new leader term.
    pub epoch: Option<i64>,
    /// Every node that sent a heartbeat (every second while it runs).
    pub nodes: Vec<ClusterNode>,
}

/// One control-plane node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterNode {
    /// Its id (`--node-id`).
    pub node_id: String,
    /// `leader`, `follower`, or `gone` (no heartbeat for a lease time, 6 s).
    pub role: String,
    /// Where its API listens.
    pub address: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

/// A notification: one event sent (or to be sent) through one notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// Id (UUIDv7); receivers see it as the delivery id (`X-Certkeeper-Delivery`).
    pub id: String,
    /// The notifier's configured name.
    pub notifier: String,
    /// pending, sending, delivered or dead (given up: requeue it).
    pub state: String,
    /// The event: issued, renewed, issuance_failed, renewal_failed, revoked, deployed,
    /// deployment_failed, threshold_crossed, issuer_unhealthy or agent_offline.
    pub event: String,
    /// The certificate it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    /// The issuer or agent it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt may run (pending).
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The document notifiers receive (subject, text, certificate, details).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}
