//! The control plane's services: certificate issuance and lifecycle, the job workers, the
//! renewal scheduler, bootstrap (local CA, admin token) and metrics.
//!
//! Nothing here knows HTTP: `ck-api` maps requests onto [`ControlPlane`] methods. The clock is
//! read in one place (`clock`), and pure rules come from `ck-domain`.

mod acme_jobs;
mod agents;
mod audit_csv;
mod auth;
mod auth_failures;
mod bootstrap;
mod clock;
mod cluster;
mod config;
mod error;
mod est;
mod group_commit;
mod issuance;
mod issuers;
mod metrics;
mod notify;
pub use metrics::{MetricsSettings, prometheus_text};
mod outage;
mod pki;
mod scep;
mod scheduler;
mod service;
mod tokens;
mod workers;

pub use agents::{AGENT_POLL_INTERVAL, AgentBundle, AgentInfo, AgentStatus, AgentWorkItem, DeploymentReport};
pub use audit_csv::audit_csv;
pub use auth::{AgentScope, ClientCertificateRejection, Operator, Principal, TokenRejection, TokenVerifier};
pub use bootstrap::{AdminToken, bootstrap};
pub use clock::now;
pub use cluster::{ClusterView, LEADER_LEASE, LEASE_TTL, RENEW_EVERY, STEP_DOWN_AFTER};
pub use config::{EnrollmentPolicy, EstProfile, ScepProfile, ServerConfig};
pub use error::ServiceError;
pub use issuers::ChallengeListener;
pub use notify::{NotificationSettings, NotifierEntry};
pub use outage::RETRY_AFTER;
pub use pki::{ListenerCertificate, OcspAnswer, SignedCrl};
pub use scep::ScepCaCerts;
pub use service::{ControlPlane, Export, ExportFormat, IssuerInfo, NewCertificate};
pub use tokens::{AuditEvent, NewToken, TokenInfo, TokenStatus};
pub use workers::spawn_background_loops;
