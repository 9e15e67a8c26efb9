//! The control plane's services: certificates and their jobs, issuers, the PKI endpoints'
//! logic (CRL, OCSP, EST, SCEP), access (tokens, audit), agents, notifications, monitoring,
//! the cluster, the background loops, and bootstrap (local CA, admin token).
//!
//! Each service owns its state and gets the services it uses in its constructor
//! ([`ControlPlane::new`] builds them in dependency order); no module imports another in a
//! cycle. Nothing here knows HTTP: `ck-api` maps requests onto the services' methods. The clock
//! is read in one place (`clock`), and pure rules come from `ck-domain`.

mod access;
mod agents;
mod bootstrap;
mod certificates;
mod clock;
mod cluster;
mod config;
mod control_plane;
mod enrollment;
mod error;
mod issuers;
mod job;
mod jobs;
mod metrics;
mod monitoring;
mod notifications;
mod pki;
mod signals;

pub use access::Access;
pub use access::audit_csv::audit_csv;
pub use access::auth::{AgentScope, ClientCertificateRejection, Operator, Principal, TokenRejection, TokenVerifier};
pub use access::tokens::{AuditEvent, NewToken, TokenInfo, TokenStatus};
pub use agents::{AGENT_POLL_INTERVAL, AgentBundle, AgentInfo, AgentStatus, AgentWorkItem, Agents, DeploymentReport};
pub use bootstrap::{AdminToken, bootstrap};
pub use certificates::{Certificates, Export, ExportFormat, NewCertificate, ValidVersions};
pub use clock::now;
pub use cluster::{Cluster, ClusterView, LEADER_LEASE, LEASE_TTL, RENEW_EVERY, STEP_DOWN_AFTER};
pub use config::{EnrollmentPolicy, EstProfile, NotificationSettings, NotifierEntry, ScepProfile, ServerConfig};
pub use control_plane::ControlPlane;
pub use enrollment::est::Est;
pub use enrollment::scep::{Scep, ScepCaCerts};
pub use error::{RETRY_AFTER, ServiceError};
pub use issuers::{ChallengeListener, IssuerInfo, Issuers};
pub use jobs::spawn_background_loops;
pub use metrics::{MetricsSettings, prometheus_text};
pub use monitoring::Monitoring;
pub use notifications::Notifications;
pub use pki::{ListenerCertificate, OcspAnswer, Pki, SignedCrl};
