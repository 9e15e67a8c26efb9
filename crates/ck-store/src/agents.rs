//! Agents: registration (token hash only), labels, heartbeats.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use ck_domain::{Certificate, CertificateId, Job, JobId, Labels};

use crate::jobs::insert_jobs;
use crate::notifications::{NewEvent, insert_events};
use crate::rows::{CERTIFICATE_COLUMNS, JOB_COLUMNS, certificate, from_ms, job, labels_json, to_ms};
use crate::{Store, StoreError};

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Id (UUID).
    pub id: String,
    /// Unique display name, e.g. the host's name.
    pub name: String,
    /// `deploy` (makes keys, sends CSRs) or `read` (pulls server-generated keys only).
    pub scope: String,
    /// Its labels: a token restricted to some labels reaches only agents that carry them.
    pub labels: Labels,
    /// What the agent reported at its last heartbeat.
    pub facts: AgentFacts,
    /// When it last sent a heartbeat.
    pub last_seen: Option<OffsetDateTime>,
    /// When its token was revoked (the agent is then locked out).
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was registered.
    pub created_at: OffsetDateTime,
}

/// What an agent says about its host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// Host name.
    pub hostname: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU architecture.
    pub arch: Option<String>,
    /// Agent version.
    pub version: Option<String>,
}

const AGENT_COLUMNS: &str = "id, name, scope, labels, hostname, os, arch, version, last_seen, created_at, revoked_at";

fn agent(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let labels_text: String = row.try_get("labels")?;
    let labels_map: BTreeMap<String, String> =
        serde_json::from_str(&labels_text).map_err(|e| StoreError::Corrupt(format!("agent labels: {e}")))?;
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: row.try_get("scope")?,
        labels: Labels::new(labels_map).map_err(|e| StoreError::Corrupt(format!("agent labels: {e}")))?,
        facts: AgentFacts {
            hostname: row.try_get("hostname")?,
            os: row.try_get("os")?,
            arch: row.try_get("arch")?,
            version: row.try_get("version")?,
        },
        last_seen: row.try_get::<Option<i64>, _>("last_seen")?.map(from_ms).transpose()?,
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_ms).transpose()?,
        created_at: from_ms(row.try_get("created_at")?)?,
    })
}

/// An agent's stored token.
#[derive(Debug, Clone)]
pub struct AgentCredential {
    /// Agent id.
    pub id: String,
    /// Agent name.
    pub name: String,
    /// `deploy` or `read`.
    pub scope: String,
    /// The token's key (`None` for agents registered by earlier versions).
    pub token_key: Option<String>,
    /// The salted hash (or bare SHA-256 for earlier agents).
    pub token_hash: String,
}

impl Store {
    /// Registers an agent with its labels and its token (the hash only, and the key). A taken
    /// name is a `Conflict`.
    pub async fn insert_agent(
        &self,
        agent: &AgentCredential,
        labels: &Labels,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let name = &agent.name;
        let res = sqlx::query(
            "INSERT INTO agents (id, name, scope, labels, token_key, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&agent.id)
        .bind(name)
        .bind(&agent.scope)
        .bind(labels_json(labels))
        .bind(&agent.token_key)
        .bind(&agent.token_hash)
        .bind(to_ms(now))
        .execute(&self.write)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("an agent named '{name}' exists already")));
        }
        Ok(())
    }

    /// Every agent, by name.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(sql!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(agent).collect()
    }

    /// One agent, by id or by name.
    pub async fn agent(&self, id_or_name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(sql!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 OR name = $1"))
            .bind(id_or_name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(agent).transpose()
    }

    /// Revokes an agent's token (by id or name): the agent is locked out; its certificates stay.
    pub async fn revoke_agent(&self, id_or_name: &str, now: OffsetDateTime) -> Result<AgentRecord, StoreError> {
        let row = sqlx::query(sql!(
            "UPDATE agents SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(to_ms(now))
        .bind(id_or_name)
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        agent(&row)
    }

    /// The token of every agent that is not revoked (for the token verifier).
    pub async fn agent_credentials(&self) -> Result<Vec<AgentCredential>, StoreError> {
        let rows = sqlx::query("SELECT id, name, scope, token_key, token_hash FROM agents WHERE revoked_at IS NULL")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AgentCredential {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    scope: row.try_get("scope")?,
                    token_key: row.try_get("token_key")?,
                    token_hash: row.try_get("token_hash")?,
                })
            })
            .collect()
    }

    /// The certificates bound to an agent, each with the id of its pending or running job.
    pub async fn agent_certificates(&self, agent_id: &str) -> Result<Vec<(Certificate, Option<JobId>)>, StoreError> {
        let rows = sqlx::query(sql!(
            "SELECT {CERTIFICATE_COLUMNS}, (SELECT jobs.id FROM jobs WHERE jobs.active_key = certificates.id) \
             AS active_job FROM certificates WHERE agent_id = $1 ORDER BY name"
        ))
        .bind(agent_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let job = row
                    .try_get::<Option<String>, _>("active_job")?
                    .map(|id| id.parse().map_err(|e| StoreError::Corrupt(format!("job id: {e}"))))
                    .transpose()?;
                Ok((certificate(row)?, job))
            })
            .collect()
    }

    /// Stores an agent's CSR for the next version of an agent-keyed certificate and makes its
    /// waiting job runnable now, in one transaction. Returns that job, or `None` when the
    /// certificate has no pending job (nothing was stored).
    pub async fn submit_agent_csr(
        &self,
        certificate_id: CertificateId,
        csr_pem: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(sql!(
            "UPDATE jobs SET run_after = $1, last_error = NULL, updated_at = $1 WHERE active_key = $2 \
             AND state = 'pending' RETURNING {JOB_COLUMNS}"
        ))
        .bind(to_ms(now))
        .bind(certificate_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job(&row)?;
        sqlx::query("UPDATE certificates SET csr_pem = $1, updated_at = $2 WHERE id = $3 AND key_source = 'agent'")
            .bind(csr_pem)
            .bind(to_ms(now))
            .bind(certificate_id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Records an agent's finished deployment as a `deploy` job, with its event.
    pub async fn record_deployment(&self, deployment: &Job, event: &NewEvent) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        insert_jobs(&mut *tx, &[deployment]).await?;
        insert_events(&mut tx, std::slice::from_ref(event)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a heartbeat; returns the agent, or `None` if it was removed meanwhile.
    pub async fn agent_heartbeat(
        &self,
        id: &str,
        facts: &AgentFacts,
        now: OffsetDateTime,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(sql!(
            "UPDATE agents SET hostname = $1, os = $2, arch = $3, version = $4, last_seen = $5 WHERE id = $6 \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(&facts.hostname)
        .bind(&facts.os)
        .bind(&facts.arch)
        .bind(&facts.version)
        .bind(to_ms(now))
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(agent).transpose()
    }
}
