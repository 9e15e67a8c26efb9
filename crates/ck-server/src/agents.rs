//! Agents: registration with a token of their own, heartbeats, online status.
//!
//! Agents pull; the server never connects to them. An agent is online while its heartbeats
//! arrive: three missed intervals make it offline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ck_domain::{
    Certificate, CertificateId, CertificateVersion, EventKind, IssuanceRequest, Job, JobId, JobKind, JobState,
    KeySource, Labels, Restriction,
};
use ck_pki::ParsedCsr;
use ck_store::{AgentCredential, AgentFacts, AgentRecord, NewEvent, Store};
use time::{Duration, OffsetDateTime};

use crate::access::Access;
use crate::access::auth::{AgentScope, Credential, Principal, mint_token};
use crate::certificates::Certificates;
use crate::job::new_job;
use crate::signals::WorkAvailable;
use crate::{ServerConfig, ServiceError, now};

/// How often agents are asked to heartbeat and poll.
pub const AGENT_POLL_INTERVAL: Duration = Duration::seconds(30);

/// Online while the last heartbeat is younger than this.
const ONLINE_WITHIN: Duration = Duration::seconds(90);

/// Whether an agent is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Heartbeats arrive.
    Online,
    /// No heartbeat for three intervals.
    Offline,
    /// Registered, never seen.
    Never,
    /// Its token was revoked.
    Revoked,
}

impl AgentStatus {
    /// Every status, for metrics.
    pub const ALL: [Self; 4] = [Self::Online, Self::Offline, Self::Never, Self::Revoked];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Never => "never-seen",
            Self::Revoked => "revoked",
        }
    }
}

/// An agent as the API shows it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// The stored agent.
    pub record: AgentRecord,
    /// Online or not, by heartbeat age.
    pub status: AgentStatus,
}

fn info(record: AgentRecord, now: OffsetDateTime) -> AgentInfo {
    let status = status_of(&record, now);
    AgentInfo { record, status }
}

pub(crate) fn status_of(record: &AgentRecord, now: OffsetDateTime) -> AgentStatus {
    match record.last_seen {
        _ if record.revoked_at.is_some() => AgentStatus::Revoked,
        Some(seen) if now - seen <= ONLINE_WITHIN => AgentStatus::Online,
        Some(_) => AgentStatus::Offline,
        None => AgentStatus::Never,
    }
}

/// The agents: registration, heartbeats, their work lists, CSRs and deployment reports.
/// Cheap to clone.
#[derive(Clone)]
pub struct Agents(Arc<AgentsState>);

/// What [`Agents`] holds, shared by its clones.
pub struct AgentsState {
    store: Store,
    config: Arc<ServerConfig>,
    access: Access,
    certificates: Certificates,
    work: WorkAvailable,
}

impl std::ops::Deref for Agents {
    type Target = AgentsState;

    fn deref(&self) -> &AgentsState {
        &self.0
    }
}

impl Agents {
    pub(crate) fn new(
        store: Store,
        config: Arc<ServerConfig>,
        access: Access,
        certificates: Certificates,
        work: WorkAvailable,
    ) -> Self {
        Self(Arc::new(AgentsState {
            store,
            config,
            access,
            certificates,
            work,
        }))
    }
}

impl Agents {
    /// Registers an agent and returns its token: the only time the token exists in clear.
    /// The agent gets `labels` plus the caller's restriction's labels (so the caller reaches
    /// it); a label that contradicts the restriction is refused.
    pub async fn create_agent(
        &self,
        name: &str,
        scope: AgentScope,
        labels: BTreeMap<String, String>,
        restriction: &Restriction,
    ) -> Result<(AgentInfo, String), ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ServiceError::Invalid(format!(
                "agent name '{name}' must be 1 to 128 letters, digits, '-', '_' or '.' (e.g. the host name)"
            )));
        }
        let labels = restriction.apply_labels(labels).map_err(|key| {
            ServiceError::Forbidden(format!(
                "this token only reaches agents with {key}={}: drop the label or use that value",
                restriction.labels().get(&key).map(String::as_str).unwrap_or_default()
            ))
        })?;
        let labels = Labels::new(labels).map_err(|e| ServiceError::Invalid(format!("agent labels: {e}")))?;
        let minted = mint_token().map_err(ServiceError::Unavailable)?;
        let id = uuid::Uuid::now_v7().to_string();
        self.store
            .insert_agent(
                &AgentCredential {
                    id: id.clone(),
                    name: name.to_owned(),
                    scope: scope.as_str().to_owned(),
                    token_key: Some(minted.key.clone()),
                    token_hash: minted.hash.clone(),
                },
                &labels,
                now(),
            )
            .await?;
        self.access.add_credential(
            minted.key.clone(),
            Credential {
                hash: minted.hash,
                principal: Principal::Agent {
                    id: id.clone(),
                    name: name.to_owned(),
                    scope,
                },
                expires_at: None,
            },
        );
        let token = minted.token;
        if let Err(error) = self.store.publish_credentials_changed().await {
            tracing::warn!(%error, "telling the other nodes about the new agent failed; they reload within 10 s");
        }
        tracing::info!(agent = %id, name, scope = scope.as_str(), "registered an agent");
        let record = self
            .store
            .agent(&id)
            .await?
            .ok_or_else(|| ServiceError::Unavailable("the new agent vanished".to_owned()))?;
        Ok((info(record, now()), token))
    }

    /// The agents `restriction` reaches (those carrying all of its labels), with their status.
    pub async fn reachable_agents(&self, restriction: &Restriction) -> Result<Vec<AgentInfo>, ServiceError> {
        let mut agents = self.agents().await?;
        agents.retain(|a| restriction.reaches_labels(a.record.labels.as_map()));
        Ok(agents)
    }

    /// Every agent with its status, whoever asks: for server-wide views only (metrics,
    /// unrestricted operators); a caller's view is `reachable_agents`.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, ServiceError> {
        let now = now();
        Ok(self.store.agents().await?.into_iter().map(|r| info(r, now)).collect())
    }

    /// Revokes an agent's token (by id or name): it stops working at once on every node (on a
    /// node that missed the notice, within the refresh interval). The agent's certificates stay.
    /// An agent outside the caller's `restriction` is "not found", as if it did not exist.
    pub async fn revoke_agent(&self, id_or_name: &str, restriction: &Restriction) -> Result<AgentInfo, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("agent '{id_or_name}' (not revoked)"));
        // Labels never change after registration, so the check cannot go stale before the update.
        let target = match self.store.agent(id_or_name).await? {
            Some(record) if restriction.reaches_labels(record.labels.as_map()) => record,
            _ => return Err(not_found()),
        };
        let record = self.store.revoke_agent(&target.id, now()).await.map_err(|e| match e {
            ck_store::StoreError::NotFound => not_found(),
            other => other.into(),
        })?;
        self.access.credentials_changed().await?;
        tracing::info!(agent = %record.id, name = %record.name, "revoked an agent's token");
        Ok(info(record, now()))
    }

    /// Records an agent's heartbeat.
    pub async fn agent_heartbeat(&self, agent_id: &str, facts: AgentFacts) -> Result<AgentInfo, ServiceError> {
        let facts = AgentFacts {
            hostname: facts.hostname.map(|s| truncate(s, 255)),
            os: facts.os.map(|s| truncate(s, 64)),
            arch: facts.arch.map(|s| truncate(s, 64)),
            version: facts.version.map(|s| truncate(s, 64)),
        };
        let now = now();
        let record = self
            .store
            .agent_heartbeat(agent_id, &facts, now)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {agent_id}")))?;
        Ok(info(record, now))
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A certificate in an agent's work list.
#[derive(Debug, Clone)]
pub struct AgentWorkItem {
    /// The certificate.
    pub certificate: Certificate,
    /// Its pending or running job.
    pub job: Option<JobId>,
    /// Whether a job waits for the agent's CSR: the agent should make a key and send one now.
    pub csr_wanted: bool,
}

/// What an agent deploys: a version, with the key when the server made it.
#[derive(Debug, Clone)]
pub struct AgentBundle {
    /// The certificate.
    pub certificate: Certificate,
    /// The version (the current one).
    pub version: CertificateVersion,
    /// The server-generated key (read-scope agents); `None` when the agent holds the key.
    pub private_key_pem: Option<String>,
}

/// An agent's account of one deployment.
#[derive(Debug, Clone)]
pub struct DeploymentReport {
    /// The version deployed.
    pub version: u32,
    /// The leaf fingerprint deployed.
    pub fingerprint: String,
    /// The targets written.
    pub targets: Vec<String>,
    /// Why it failed (with the failing command's stderr); `None` on success.
    pub error: Option<String>,
}

impl Agents {
    /// The certificates bound to an agent, and whether each waits for a CSR.
    pub async fn agent_work(&self, agent_id: &str) -> Result<Vec<AgentWorkItem>, ServiceError> {
        let bound = self.store.agent_certificates(agent_id).await?;
        Ok(bound
            .into_iter()
            .map(|(certificate, job)| AgentWorkItem {
                csr_wanted: job.is_some() && certificate.awaits_agent_csr(),
                certificate,
                job,
            })
            .collect())
    }

    /// Accepts an agent's CSR for the next version of one of its certificates: the key is
    /// checked, the names must be the certificate's, and the waiting job runs at once.
    pub async fn submit_agent_csr(
        &self,
        agent_id: &str,
        scope: AgentScope,
        certificate_id: CertificateId,
        csr_pem: &str,
    ) -> Result<Job, ServiceError> {
        if scope == AgentScope::Read {
            return Err(ServiceError::Forbidden(
                "this agent's token has the read scope: it pulls server-generated keys and cannot send CSRs \
                 (register the agent with the deploy scope to let it make keys)"
                    .to_owned(),
            ));
        }
        let cert = self.bound_certificate(agent_id, certificate_id).await?;
        if cert.key_source != KeySource::Agent {
            return Err(ServiceError::Conflict(format!(
                "certificate {} ('{}') has a key made by the {}: fetch its bundle instead of sending a CSR",
                cert.id,
                cert.name,
                cert.key_source.as_str()
            )));
        }
        let csr = ParsedCsr::parse(csr_pem.as_bytes()).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        // A key revoked as compromised is never certified again: an agent that reuses keys
        // would otherwise get the stolen key a fresh certificate.
        let compromised = if cert.revocation_reason == Some(ck_domain::RevocationReason::KeyCompromise) {
            let versions = self.store.versions(cert.id).await?;
            versions.iter().filter(|v| v.version == cert.current_version).any(|v| {
                ParsedCsr::parse_stored(v.csr_pem.as_bytes()).is_ok_and(|p| p.public_key_der == csr.public_key_der)
            })
        } else {
            false
        };
        if compromised {
            return Err(ServiceError::Conflict(format!(
                "certificate '{}' was revoked because its key was compromised: make a new key (turn key reuse \
                 off in the agent's config) and send its CSR",
                cert.name
            )));
        }
        let asked = IssuanceRequest::resolve(None, &[], Some(&csr.names), &self.config.name_policy)
            .map_err(|e| ServiceError::Invalid(format!("the CSR's names: {e}")))?;
        let asked: BTreeSet<String> = asked.sans.iter().map(ToString::to_string).collect();
        let wanted: BTreeSet<String> = cert.sans.iter().map(ToString::to_string).collect();
        if asked != wanted {
            return Err(ServiceError::Invalid(format!(
                "the CSR asks for {} but certificate '{}' is for {}: make the CSR with exactly its names",
                join(&asked),
                cert.name,
                join(&wanted)
            )));
        }
        let job = self
            .store
            .submit_agent_csr(certificate_id, &csr.pem, now())
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "certificate '{}' has no job waiting for a CSR (it may be running: try again in a moment)",
                    cert.name
                ))
            })?;
        self.work.notify_one();
        tracing::info!(agent = agent_id, certificate = %certificate_id, key = %csr.key_description, job = %job.id,
            "received an agent's CSR");
        Ok(job)
    }

    /// The current version of one of the agent's certificates, with the key if the server made it.
    pub async fn agent_bundle(
        &self,
        agent_id: &str,
        certificate_id: CertificateId,
    ) -> Result<AgentBundle, ServiceError> {
        let certificate = self.bound_certificate(agent_id, certificate_id).await?;
        let (version, key) = self.certificates.version(certificate_id, None).await?;
        let private_key_pem = if certificate.key_source == KeySource::Server {
            key
        } else {
            None
        };
        Ok(AgentBundle {
            certificate,
            version,
            private_key_pem,
        })
    }

    /// Records an agent's deployment as a finished `deploy` job of the certificate.
    pub async fn report_deployment(
        &self,
        agent_id: &str,
        certificate_id: CertificateId,
        report: DeploymentReport,
    ) -> Result<Job, ServiceError> {
        let cert = self.bound_certificate(agent_id, certificate_id).await?;
        let now = now();
        let mut job = new_job(cert.id, JobKind::Deploy, now, 1);
        job.attempts = 1;
        job.max_attempts = 1;
        job.finished_at = Some(now);
        let targets = report.targets.join(", ");
        let event = NewEvent {
            kind: if report.error.is_none() {
                EventKind::Deployed
            } else {
                EventKind::DeploymentFailed
            },
            dedup_key: Some(format!("deploy:{}", job.id)),
            certificate_id: Some(cert.id),
            subject: Some(agent_id.to_owned()),
            payload: serde_json::json!({
                "agent_id": agent_id,
                "version": report.version,
                "fingerprint": report.fingerprint,
                "targets": report.targets,
                "error": report.error.as_deref().map(|e| truncate(e.to_owned(), 2048)),
            }),
            at: now,
        };
        match report.error {
            None => {
                job.state = JobState::Succeeded;
                tracing::info!(agent = agent_id, certificate = %cert.id, version = report.version,
                    fingerprint = %report.fingerprint, targets, "agent deployed a certificate");
            }
            Some(error) => {
                job.state = JobState::Failed;
                tracing::warn!(agent = agent_id, certificate = %cert.id, version = report.version, targets,
                    %error, "agent's deployment failed");
                job.last_error = Some(truncate(error, 8192));
            }
        }
        self.store.record_deployment(&job, &event).await?;
        Ok(job)
    }

    /// A certificate bound to this agent; any other is "not found", so an agent learns nothing
    /// about certificates that are not its own.
    async fn bound_certificate(&self, agent_id: &str, id: CertificateId) -> Result<Certificate, ServiceError> {
        match self.store.certificate(id).await? {
            Some(cert) if cert.agent_id.as_deref() == Some(agent_id) => Ok(cert),
            _ => Err(ServiceError::NotFound(format!("certificate {id} of this agent"))),
        }
    }
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}
