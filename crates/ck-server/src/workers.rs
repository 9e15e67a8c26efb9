//! Background loops: job workers and the renewal scheduler.
//!
//! Workers claim jobs in batches, sign them on blocking threads, and commit every success of a
//! batch in one transaction. Under load this turns one commit per certificate into one commit
//! per batch; when idle a batch is a single job, so latency stays low.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use ck_domain::{Certificate, CertificateId, JobId};
use ck_store::{ClaimedJob, Completion};
use rand::Rng;
use tokio::task::JoinHandle;

use crate::acme_jobs::run_acme_job;
use crate::issuance::{IssueFailure, issue};
use crate::issuers::Issuer;
use crate::{AGENT_POLL_INTERVAL, ControlPlane, now};

/// How long a job waiting for its agent's CSR sleeps before it is looked at again.
const AGENT_CSR_RECHECK: time::Duration = time::Duration::hours(1);

/// Asks the loops to stop; they finish the batch in hand first.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(pub(crate) tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown was requested.
    pub(crate) async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Starts the leadership loop, the workers and the scheduler. On start, jobs this node was running when it died are
/// put back at once. Returns the tasks so the caller can wait for them at shutdown.
pub async fn spawn_background_loops(
    control_plane: &ControlPlane,
    address: Option<String>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, crate::ServiceError> {
    let inner = &control_plane.inner;
    let released = inner.store.release_jobs_of(&inner.config.node_id, now()).await?;
    if released > 0 {
        tracing::info!(released, "took back the jobs this node was running before it stopped");
    }
    let released = inner
        .store
        .release_notifications_of(&inner.config.node_id, now())
        .await?;
    if released > 0 {
        tracing::info!(
            released,
            "took back the notifications this node was sending before it stopped"
        );
    }
    let mut tasks = Vec::new();
    let leadership = control_plane.clone();
    let leadership_shutdown = Shutdown(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        crate::cluster::leadership_loop(leadership, address, leadership_shutdown).await
    }));
    for worker_idx in 0..inner.config.workers.max(1) {
        let control_plane = control_plane.clone();
        let shutdown = Shutdown(shutdown.clone());
        tasks.push(tokio::spawn(async move {
            worker_loop(control_plane, worker_idx, shutdown).await
        }));
    }
    let scheduler = control_plane.clone();
    let scheduler_shutdown = Shutdown(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        crate::scheduler::scheduler_loop(scheduler, scheduler_shutdown).await
    }));
    let health = control_plane.clone();
    let health_shutdown = Shutdown(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        crate::scheduler::issuer_health_loop(health, health_shutdown).await
    }));
    let notices = control_plane.clone();
    let notices_shutdown = Shutdown(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        crate::tokens::notices_loop(notices, notices_shutdown).await
    }));
    let probe = control_plane.clone();
    let probe_shutdown = Shutdown(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        crate::outage::probe_loop(probe, probe_shutdown).await
    }));
    let notifications = control_plane.clone();
    let notifications_shutdown = Shutdown(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        crate::notify::notification_loop(notifications, notifications_shutdown).await
    }));
    let tokens = control_plane.clone();
    let tokens_shutdown = Shutdown(shutdown);
    tasks.push(tokio::spawn(async move {
        crate::tokens::credentials_loop(tokens, tokens_shutdown).await
    }));
    Ok(tasks)
}

async fn worker_loop(control_plane: ControlPlane, worker_idx: usize, mut shutdown: Shutdown) {
    let inner = &control_plane.inner;
    let owner = inner.config.node_id.clone();
    loop {
        if *shutdown.0.borrow() {
            return;
        }
        if !inner.database.is_up() {
            // Paused during a database outage; the probe wakes the workers when it is over.
            tokio::select! {
                () = inner.work_available.notified() => {}
                () = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                () = shutdown.requested() => return,
            }
            continue;
        }
        let claimed = match inner
            .store
            .claim_jobs(&owner, now(), inner.config.job_lease, inner.config.batch_size)
            .await
        {
            Ok(claimed) => {
                inner.metrics.jobs_claimed(claimed.len());
                claimed
            }
            Err(error) => {
                tracing::warn!(worker = worker_idx, %error, "claiming jobs failed; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(StdDuration::from_secs(1)) => continue,
                    () = shutdown.requested() => return,
                }
            }
        };
        if claimed.is_empty() {
            // Idle: wake on a local enqueue, or poll for jobs from other nodes and retries.
            tokio::select! {
                () = inner.work_available.notified() => {}
                () = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                () = shutdown.requested() => return,
            }
            continue;
        }
        // A full batch may mean more work: let an idle worker start on it meanwhile.
        if claimed.len() as u32 == inner.config.batch_size {
            inner.work_available.notify_one();
        }
        run_batch(&control_plane, &owner, claimed).await;
    }
}

async fn run_batch(control_plane: &ControlPlane, owner: &str, claimed: Vec<ClaimedJob>) {
    let inner = &control_plane.inner;
    let started = std::time::Instant::now();
    let n_jobs = claimed.len();
    let ids: Vec<_> = claimed.iter().map(|c| c.job.certificate_id).collect();
    let certificates: Result<HashMap<_, _>, _> = inner
        .store
        .certificates_by_ids(&ids)
        .await
        .map(|found| found.into_iter().map(|c| (c.id, c)).collect());
    // Which issuer each job's certificate has, for the metrics of its outcome.
    let issuer_of: HashMap<CertificateId, String> = match &certificates {
        Ok(found) => found.iter().map(|(id, c)| (*id, c.issuer_id.to_string())).collect(),
        Err(_) => HashMap::new(),
    };
    let issuer_of = |id: CertificateId| issuer_of.get(&id).cloned().unwrap_or_else(|| "unknown".to_owned());
    let mut prepared = Vec::with_capacity(claimed.len());
    for job in claimed {
        let res = match &certificates {
            Ok(found) => match found.get(&job.job.certificate_id) {
                Some(cert) if cert.awaits_agent_csr() => {
                    wait_for_agent_csr(control_plane, owner, &job, cert).await;
                    continue;
                }
                Some(cert) => match control_plane.issuer_handle(&cert.issuer_id).await {
                    Ok(Issuer::Local(ca)) => Ok((cert.clone(), ca)),
                    Ok(Issuer::Acme(state)) => {
                        // An order waits on the CA and DNS for seconds: it runs as its own task.
                        let task = run_acme_job(control_plane.clone(), owner.to_owned(), job, cert.clone(), state);
                        tokio::spawn(task);
                        continue;
                    }
                    Err(error) => Err(IssueFailure {
                        message: error.to_string(),
                        transient: false,
                    }),
                },
                None => Err(IssueFailure {
                    message: "the certificate was deleted".to_owned(),
                    transient: false,
                }),
            },
            Err(error) => Err(IssueFailure {
                message: error.to_string(),
                transient: true,
            }),
        };
        prepared.push((job, res));
    }
    if prepared.is_empty() {
        return;
    }
    let fetched = started.elapsed();
    let max_validity = inner.config.max_validity;
    // Signing (and RSA key generation) is CPU work: keep it off the async worker threads.
    let signed = tokio::task::spawn_blocking(move || {
        let mut rng = rand::rng();
        prepared
            .into_iter()
            .map(|(job, res)| {
                let started = std::time::Instant::now();
                let outcome = res.and_then(|(cert, ca)| issue(&ca, &cert, max_validity, now(), rng.random::<f64>()));
                (job, outcome, started.elapsed())
            })
            .collect::<Vec<_>>()
    })
    .await;
    let signed = match signed {
        Ok(signed) => signed,
        Err(error) => {
            // A panic while signing: the leases expire and the jobs are retried elsewhere.
            tracing::error!(%error, "signing batch panicked");
            return;
        }
    };

    let signed_at = started.elapsed();
    let mut completions = Vec::new();
    let mut failures = Vec::new();
    for (claimed, outcome, elapsed) in signed {
        inner
            .metrics
            .observe_issuance(&issuer_of(claimed.job.certificate_id), "none", elapsed);
        match outcome {
            Ok((version, renew_at)) => completions.push(Completion {
                claimed,
                version,
                renew_at,
            }),
            Err(failure) => failures.push((claimed, failure)),
        }
    }
    let mut finished: Vec<JobId> = Vec::new();
    let commit_started = std::time::Instant::now();
    if !completions.is_empty() {
        match inner.store.complete_jobs(owner, &completions, now()).await {
            Ok(stored) => record_completions(control_plane, &completions, &stored, &issuer_of, &mut finished),
            Err(error) => {
                // One bad row (say, a serial collision) must not sink the batch: retry singly.
                tracing::warn!(%error, n = completions.len(), "batch commit failed; committing one by one");
                for completion in completions {
                    match inner
                        .store
                        .complete_jobs(owner, std::slice::from_ref(&completion), now())
                        .await
                    {
                        Ok(stored) => record_completions(
                            control_plane,
                            std::slice::from_ref(&completion),
                            &stored,
                            &issuer_of,
                            &mut finished,
                        ),
                        Err(error) => failures.push((
                            completion.claimed,
                            IssueFailure {
                                message: error.to_string(),
                                transient: true,
                            },
                        )),
                    }
                }
            }
        }
    }
    for (claimed, failure) in failures {
        let retry_at = if failure.transient {
            inner
                .config
                .retry
                .next_delay(claimed.attempt, rand::rng().random::<f64>())
                .map(|delay| now() + delay)
        } else {
            None
        };
        tracing::warn!(job = %claimed.job.id, certificate = %claimed.job.certificate_id, error = %failure.message,
            retry_at = ?retry_at, "job attempt failed");
        inner.metrics.job_failed(claimed.job.kind.as_str());
        inner.metrics.issuance(
            claimed.job.kind.as_str(),
            &issuer_of(claimed.job.certificate_id),
            "failure",
        );
        match inner
            .store
            .fail_job(owner, &claimed, &failure.message, None, retry_at, now())
            .await
        {
            Ok(true) if retry_at.is_none() => finished.push(claimed.job.id),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(job = %claimed.job.id, %error, "recording the failure failed; the lease will expire")
            }
        }
    }
    control_plane.notify_finished(&finished);
    tracing::debug!(n_jobs, ?fetched, ?signed_at, commit = ?commit_started.elapsed(), total = ?started.elapsed(), "job batch done");
}

/// Puts a job back until its agent's CSR arrives. The CSR's arrival makes it runnable at once
/// (and a CSR refused because the job was running here is sent again within seconds), so the
/// long delay only keeps jobs of absent agents from being claimed over and over.
async fn wait_for_agent_csr(control_plane: &ControlPlane, owner: &str, claimed: &ClaimedJob, cert: &Certificate) {
    let agent = cert.agent_id.as_deref().unwrap_or("?");
    let reason = format!(
        "waiting for agent {agent} to send a CSR (it asks for work every {} s)",
        AGENT_POLL_INTERVAL.whole_seconds()
    );
    let now = now();
    if let Err(error) = control_plane
        .inner
        .store
        .defer_job(owner, claimed, &reason, now + AGENT_CSR_RECHECK, now)
        .await
    {
        tracing::warn!(job = %claimed.job.id, %error, "deferring the job failed; the lease will expire");
    }
}

pub(crate) fn record_completions(
    control_plane: &ControlPlane,
    completions: &[Completion],
    stored: &[Option<u32>],
    issuer_of: &dyn Fn(CertificateId) -> String,
    finished: &mut Vec<JobId>,
) {
    for (completion, version) in completions.iter().zip(stored) {
        let job = &completion.claimed.job;
        match version {
            Some(version) => {
                tracing::info!(certificate = %job.certificate_id, version, serial = %completion.version.serial,
                    kind = %job.kind, "certificate issued");
                control_plane
                    .inner
                    .metrics
                    .issuance(job.kind.as_str(), &issuer_of(job.certificate_id), "success");
                finished.push(job.id);
            }
            None => tracing::warn!(job = %job.id, "job was taken over by another worker; result dropped"),
        }
    }
}
