//! Agents: registration (token hash only), heartbeats.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::rows::{from_ms, to_ms};
use crate::{Store, StoreError};

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Id (UUID).
    pub id: String,
    /// Unique display name, e.g. the host's name.
    pub name: String,
    /// What the agent reported at its last heartbeat.
    pub facts: AgentFacts,
    /// When it last sent a heartbeat.
    pub last_seen: Option<OffsetDateTime>,
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

const AGENT_COLUMNS: &str = "id, name, hostname, os, arch, version, last_seen, created_at";

fn agent(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        facts: AgentFacts {
            hostname: row.try_get("hostname")?,
            os: row.try_get("os")?,
            arch: row.try_get("arch")?,
            version: row.try_get("version")?,
        },
        last_seen: row.try_get::<Option<i64>, _>("last_seen")?.map(from_ms).transpose()?,
        created_at: from_ms(row.try_get("created_at")?)?,
    })
}

impl Store {
    /// Registers an agent with the hash of its token. A taken name is a `Conflict`.
    pub async fn insert_agent(
        &self,
        id: &str,
        name: &str,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO agents (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(token_hash)
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

    /// Token hashes of every agent, with the agent's id (for the token verifier).
    pub async fn agent_token_hashes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, token_hash FROM agents")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("token_hash")?, row.try_get("id")?)))
            .collect()
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
