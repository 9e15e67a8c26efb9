//! The agent process: heartbeats, polls for work, makes keys and sends CSRs, deploys what the
//! server issued, reports each deployment. Pull only: the server never connects to the agent.
//!
//! One cycle = heartbeat, `GET /agent/work`, then per configured certificate: send a CSR when a
//! job waits for one, deploy when a target lacks the current version. A server that cannot be
//! reached only delays the next cycle (exponential backoff up to a minute); what is deployed
//! keeps being served meanwhile. Deployment failures are reported as failed `deploy` jobs and
//! retried with their own backoff, per target and version.

mod config;
mod keys;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ck_api_types::{AgentWork, AgentWorkItem, DeploymentReport, Heartbeat};
use ck_client::{Client, ClientError};
use ck_domain::SubjectAltName;

pub use config::{AgentConfig, CertificateEntry, KeySettings};
pub use keys::KeyStore;

use crate::bundle::{Bundle, SecretPem};
use crate::deploy::{deploy, deployed_fingerprint, preflight, recover};
use crate::{DeployError, Recovery, TargetConfig};

/// Why the agent stopped, or why one step failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration file is unusable.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A target's configuration fails the checks a deployment makes (paths, programs, owners).
    #[error("target '{name}': {source}")]
    Target {
        name: String,
        #[source]
        source: DeployError,
    },
    /// A configured certificate is not one of this agent's.
    #[error(
        "{label} in the agent configuration is not bound to this agent (bound: {bound}); bind it on the server \
         (`certkeeper cert create --agent <this agent> ...`) or fix the name"
    )]
    UnknownCertificate { label: String, bound: String },
    /// A selector matched several certificates.
    #[error("{label} matches {count} certificates ({names}); a selector must match exactly one")]
    AmbiguousSelector { label: String, count: usize, names: String },
    /// The server refused the token.
    #[error("the server refused the agent's token ({0}); check --token (an agent token from `certkeeper agents add`)")]
    Unauthorized(String),
    /// The server could not be reached or failed.
    #[error(transparent)]
    Server(#[from] ClientError),
    /// Making or reading a key failed.
    #[error("key: {0}")]
    Key(String),
    /// The server sent a certificate id that is not of the form it makes (a UUID); the agent
    /// uses ids in key file paths, so it refuses the work item instead.
    #[error(
        "the server sent a malformed certificate id {0:?} (expected letters, digits and '-', at most 64): \
         refusing to use it in a path; check that --server points at certkeeper"
    )]
    InvalidCertificateId(String),
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Backoff of the server connection: 1 s doubling up to this.
const MAX_SERVER_BACKOFF: Duration = Duration::from_secs(60);
/// After a CSR, poll this often until the new version arrives (or `FAST_POLL_FOR` passes).
const FAST_POLL: Duration = Duration::from_secs(1);
const FAST_POLL_FOR: Duration = Duration::from_secs(120);
/// A failed deployment of a version to a target is retried after this, doubling up to an hour.
const FIRST_DEPLOY_RETRY: Duration = Duration::from_secs(60);
const MAX_DEPLOY_RETRY: Duration = Duration::from_secs(3600);

/// What one cycle did (for `--once` and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CycleSummary {
    /// Certificates a CSR was sent for.
    pub csrs_sent: Vec<String>,
    /// Deployments done, as (target, fingerprint).
    pub deployed: Vec<(String, String)>,
    /// Deployments that failed, as (target, error).
    pub failed: Vec<(String, String)>,
}

struct RetryAt {
    at: Instant,
    delay: Duration,
}

/// A running agent.
pub struct Agent {
    config: AgentConfig,
    client: Client,
    keys: KeyStore,
    /// (target, fingerprint) → when to try again after a failure.
    retries: HashMap<(String, String), RetryAt>,
    fast_poll_until: Option<Instant>,
    /// Whether a poll has succeeded: configuration mistakes found by the first one are fatal.
    checked_against_server: bool,
    server_interval: Duration,
}

impl Agent {
    /// Checks every target as a deployment would (nothing is written), settles deployments a
    /// crash interrupted, and opens the key store.
    pub fn start(config: AgentConfig, client: Client) -> Result<Self, AgentError> {
        let sample = sample_bundle()?;
        let state_dir = config.targets_state_dir();
        for target in all_targets(&config) {
            let name = target.target().common().name.to_owned();
            preflight(target, &sample, &config.allowed_roots).map_err(|source| AgentError::Target {
                name: name.clone(),
                source,
            })?;
            match recover(target, &state_dir).map_err(|source| AgentError::Target {
                name: name.clone(),
                source,
            })? {
                Recovery::Clean => {}
                Recovery::RolledBack { fingerprint, restored } => {
                    tracing::warn!(target_name = %name, %fingerprint, files = restored.len(),
                        "an interrupted deployment was rolled back; it will be redone")
                }
            }
        }
        let keys = KeyStore::open(&config.keys_dir())?;
        Ok(Self {
            config,
            client,
            keys,
            retries: HashMap::new(),
            fast_poll_until: None,
            checked_against_server: false,
            server_interval: Duration::from_secs(30),
        })
    }

    /// Runs cycles until `shutdown` resolves. Only a fatal error ends it early: a configuration
    /// the server contradicts, or a refused token.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            let wait = match self.cycle().await {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "the server answers again");
                    }
                    failures = 0;
                    self.next_poll()
                }
                Err(error @ (AgentError::Server(_) | AgentError::Io { .. } | AgentError::Key(_))) => {
                    failures += 1;
                    let wait = server_backoff(failures);
                    tracing::warn!(%error, retry_in_s = wait.as_secs_f32(), "cycle failed; keeping what is deployed");
                    wait
                }
                Err(fatal) => return Err(fatal),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }

    fn next_poll(&self) -> Duration {
        if self.fast_poll_until.is_some_and(|until| Instant::now() < until) {
            return FAST_POLL;
        }
        self.config
            .poll_interval_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.server_interval)
    }

    /// One heartbeat and poll, and what it calls for.
    pub async fn cycle(&mut self) -> Result<CycleSummary, AgentError> {
        let answer = self.client.heartbeat(&host_facts()).await.map_err(refused_token)?;
        self.server_interval = Duration::from_secs(answer.poll_interval_seconds.clamp(1, 3600));
        let work = self.client.agent_work().await.map_err(refused_token)?;
        let (matched, mut mismatches) = self.match_entries(&work);
        if !mismatches.is_empty() && !self.checked_against_server {
            return Err(mismatches.remove(0));
        }
        for error in mismatches {
            // Changed on the server since start: what is deployed stays, the rest goes on.
            tracing::error!(%error, "the agent configuration no longer matches the server");
        }
        self.checked_against_server = true;
        let mut summary = CycleSummary::default();
        for (entry_idx, item) in matched {
            // The id goes into key paths and request URLs: a malformed one is skipped, not used.
            if let Err(error) = keys::check_certificate_id(&item.id) {
                tracing::error!(%error, certificate = %item.name, "skipping a work item");
                continue;
            }
            let entry = self.config.certificates[entry_idx].clone();
            if item.csr_wanted && item.key_source == "agent" {
                self.send_csr(&entry, &item, &mut summary).await?;
            }
            if item.version > 0 {
                self.deploy_item(&entry, &item, &mut summary).await?;
            }
        }
        Ok(summary)
    }

    /// Each configured entry with the one bound certificate it names, and the entries that
    /// name none or several.
    fn match_entries(&self, work: &AgentWork) -> (Vec<(usize, AgentWorkItem)>, Vec<AgentError>) {
        let (mut matched, mut mismatches) = (Vec::new(), Vec::new());
        for (idx, entry) in self.config.certificates.iter().enumerate() {
            let found: Vec<&AgentWorkItem> = work
                .certificates
                .iter()
                .filter(|item| match &entry.name {
                    Some(name) => &item.name == name || &item.id == name,
                    None => entry.selector.iter().all(|(k, v)| item.labels.get(k) == Some(v)),
                })
                .collect();
            match found.as_slice() {
                [one] => matched.push((idx, (*one).clone())),
                [] => {
                    let bound: Vec<&str> = work.certificates.iter().map(|c| c.name.as_str()).collect();
                    mismatches.push(AgentError::UnknownCertificate {
                        label: entry.label(),
                        bound: if bound.is_empty() {
                            "none".to_owned()
                        } else {
                            bound.join(", ")
                        },
                    });
                }
                many => mismatches.push(AgentError::AmbiguousSelector {
                    label: entry.label(),
                    count: many.len(),
                    names: many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                }),
            }
        }
        (matched, mismatches)
    }

    async fn send_csr(
        &mut self,
        entry: &CertificateEntry,
        item: &AgentWorkItem,
        summary: &mut CycleSummary,
    ) -> Result<(), AgentError> {
        let names = item
            .sans
            .iter()
            .map(|n| n.parse::<SubjectAltName>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AgentError::Key(format!("certificate '{}': a name the server sent: {e}", item.name)))?;
        let reuse_of = if entry.key.reuse && item.version > 0 {
            Some(self.client.agent_bundle(&item.id).await?.chain_pem)
        } else {
            None
        };
        let (keys, id, key_type) = (self.keys.clone(), item.id.clone(), entry.key_type());
        let key = tokio::task::spawn_blocking(move || keys.key_for_csr(&id, key_type, &names, reuse_of.as_deref()))
            .await
            .map_err(|e| AgentError::Key(format!("key generation stopped: {e}")))??;
        match self.client.submit_csr(&item.id, &key.csr_pem).await {
            Ok(job) => {
                tracing::info!(certificate = %item.name, key = %key.id, job = %job.id, "sent a CSR; the key stays here");
                summary.csrs_sent.push(item.name.clone());
                self.fast_poll_until = Some(Instant::now() + FAST_POLL_FOR);
                Ok(())
            }
            Err(error) if error.status() == Some(409) => {
                // The job is between two states on the server: the next (fast) poll sends it again.
                tracing::debug!(certificate = %item.name, %error, "CSR not taken now; trying again shortly");
                self.fast_poll_until = Some(Instant::now() + FAST_POLL_FOR);
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn deploy_item(
        &mut self,
        entry: &CertificateEntry,
        item: &AgentWorkItem,
        summary: &mut CycleSummary,
    ) -> Result<(), AgentError> {
        let Some(fingerprint) = item.fingerprint.clone() else {
            return Ok(());
        };
        let state_dir = self.config.targets_state_dir();
        let now = Instant::now();
        let mut due = Vec::new();
        for target in &entry.targets {
            let name = target.target().common().name.to_owned();
            let deployed = deployed_fingerprint(&state_dir, &name).map_err(|source| AgentError::Target {
                name: name.clone(),
                source,
            })?;
            let waiting = self
                .retries
                .get(&(name.clone(), fingerprint.clone()))
                .is_some_and(|retry| now < retry.at);
            if deployed.as_deref() != Some(fingerprint.as_str()) && !waiting {
                due.push(target.clone());
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let fetched = self.client.agent_bundle(&item.id).await?;
        let agent_made_key = fetched.private_key_pem.is_none();
        let key = match fetched.private_key_pem.clone() {
            Some(pem) => Some(SecretPem::new(pem)),
            None => self.keys.key_of(&item.id, &fetched.chain_pem)?,
        };
        let mut errors = Vec::new();
        let mut deployed_names = Vec::new();
        match key.ok_or_else(|| {
            format!(
                "this agent holds no key for version {} (its key was made elsewhere or the key directory was lost); \
                 renew the certificate to make a new one",
                fetched.version
            )
        }) {
            Err(reason) => errors.extend(
                due.iter()
                    .map(|t| (t.target().common().name.to_owned(), reason.clone())),
            ),
            Ok(key) => {
                let bundle = Bundle::from_pem(fetched.chain_pem.clone(), key).map_err(|source| AgentError::Target {
                    name: item.name.clone(),
                    source,
                })?;
                for target in &due {
                    let (target, name) = (target.clone(), target.target().common().name.to_owned());
                    let (bundle, roots, dir) = (bundle.clone(), self.config.allowed_roots.clone(), state_dir.clone());
                    let outcome = tokio::task::spawn_blocking(move || deploy(&target, &bundle, &roots, &dir))
                        .await
                        .map_err(|e| AgentError::Key(format!("deployment stopped: {e}")))?;
                    match outcome {
                        Ok(report) => {
                            tracing::info!(certificate = %item.name, target_name = %name, version = fetched.version,
                                changed = report.changed, verified = ?report.verified, "deployed");
                            self.retries.remove(&(name.clone(), fetched.fingerprint.clone()));
                            summary.deployed.push((name.clone(), fetched.fingerprint.clone()));
                            deployed_names.push(name);
                        }
                        Err(error) => errors.push((name, error.to_string())),
                    }
                }
            }
        }
        for (name, error) in &errors {
            let key = (name.clone(), fetched.fingerprint.clone());
            let delay = self
                .retries
                .get(&key)
                .map_or(FIRST_DEPLOY_RETRY, |r| (r.delay * 2).min(MAX_DEPLOY_RETRY));
            tracing::warn!(certificate = %item.name, target_name = %name, %error, retry_in_s = delay.as_secs(),
                "deployment failed");
            self.retries.insert(
                key,
                RetryAt {
                    at: Instant::now() + delay,
                    delay,
                },
            );
            summary.failed.push((name.clone(), error.clone()));
        }
        if errors.is_empty() && agent_made_key {
            let removed = self.keys.prune_older_than(&item.id, &fetched.chain_pem)?;
            if removed > 0 {
                tracing::info!(certificate = %item.name, removed, "removed keys no target uses any more");
            }
        }
        let report = DeploymentReport {
            version: fetched.version,
            fingerprint: fetched.fingerprint.clone(),
            targets: due.iter().map(|t| t.target().common().name.to_owned()).collect(),
            error: (!errors.is_empty()).then(|| {
                errors
                    .iter()
                    .map(|(name, error)| format!("target '{name}': {error}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        };
        if let Err(error) = self.client.report_deployment(&item.id, &report).await {
            // The deployment itself stands; the report is lost, the files are what matters.
            tracing::warn!(certificate = %item.name, %error, "reporting the deployment failed");
        }
        Ok(())
    }
}

fn all_targets(config: &AgentConfig) -> impl Iterator<Item = &TargetConfig> {
    config.certificates.iter().flat_map(|entry| entry.targets.iter())
}

fn refused_token(error: ClientError) -> AgentError {
    match error.status() {
        Some(401 | 403) => AgentError::Unauthorized(error.to_string()),
        _ => AgentError::Server(error),
    }
}

fn server_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_SERVER_BACKOFF)
}

fn host_facts() -> Heartbeat {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    Heartbeat {
        hostname,
        os: Some(std::env::consts::OS.to_owned()),
        arch: Some(std::env::consts::ARCH.to_owned()),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// A throwaway self-signed bundle, so that the start-up checks can plan every target (keystores
/// are built from a real key) without a certificate from the server.
fn sample_bundle() -> Result<Bundle, AgentError> {
    let certified = rcgen::generate_simple_self_signed(vec!["preflight.certkeeper.invalid".to_owned()])
        .map_err(|e| AgentError::Key(format!("making the start-up check's sample: {e}")))?;
    Bundle::from_pem(
        certified.cert.pem(),
        SecretPem::new(certified.signing_key.serialize_pem()),
    )
    .map_err(|source| AgentError::Target {
        name: "sample".to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_backoff_doubles_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| server_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
