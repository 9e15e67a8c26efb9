//! Agents: registration with a token of their own, heartbeats, online status.
//!
//! Agents pull; the server never connects to them. An agent is online while its heartbeats
//! arrive: three missed intervals make it offline.

use ck_store::{AgentFacts, AgentRecord};
use time::{Duration, OffsetDateTime};

use crate::{ControlPlane, Principal, ServiceError, hash_token, new_token, now};

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
}

impl AgentStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Never => "never-seen",
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
    let status = match record.last_seen {
        Some(seen) if now - seen <= ONLINE_WITHIN => AgentStatus::Online,
        Some(_) => AgentStatus::Offline,
        None => AgentStatus::Never,
    };
    AgentInfo { record, status }
}

impl ControlPlane {
    /// Registers an agent and returns its token: the only time the token exists in clear.
    pub async fn create_agent(&self, name: &str) -> Result<(AgentInfo, String), ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ServiceError::Invalid(format!(
                "agent name '{name}' must be 1 to 128 letters, digits, '-', '_' or '.' (e.g. the host name)"
            )));
        }
        let token = new_token().map_err(ServiceError::Unavailable)?;
        let id = uuid::Uuid::now_v7().to_string();
        let hash = hash_token(&token);
        self.inner.store.insert_agent(&id, name, &hash, now()).await?;
        self.inner.tokens.add(hash, Principal::Agent(id.clone()));
        tracing::info!(agent = %id, name, "registered an agent");
        let record = self
            .inner
            .store
            .agents()
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| ServiceError::Unavailable("the new agent vanished".to_owned()))?;
        Ok((info(record, now()), token))
    }

    /// Every agent with its status.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>, ServiceError> {
        let now = now();
        Ok(self
            .inner
            .store
            .agents()
            .await?
            .into_iter()
            .map(|r| info(r, now))
            .collect())
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
            .inner
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
