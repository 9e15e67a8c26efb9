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

use super::acme_jobs::run_acme_job;
use super::issuance::{IssueFailure, issue};
use super::runner::{JobRunner, record_completions};
use crate::agents::AGENT_POLL_INTERVAL;
use crate::issuers::Issuer;
use crate::now;
use crate::signals::Shutdown;

/// How long a job waiting for its agent's CSR sleeps before it is looked at again.
const AGENT_CSR_RECHECK: time::Duration = time::Duration::hours(1);

pub(super) async fn worker_loop(runner: JobRunner, worker_idx: usize, mut shutdown: Shutdown) {
    let owner = runner.config.node_id.clone();
    loop {
        if shutdown.is_requested() {
            return;
        }
        if !runner.cluster.database_reachable() {
            // Paused during a database outage; the probe wakes the workers when it is over.
            tokio::select! {
                () = runner.work.notified() => {}
                () = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                () = shutdown.requested() => return,
            }
            continue;
        }
        let claimed = match runner
            .store
            .claim_jobs(&owner, now(), runner.config.job_lease, runner.config.batch_size)
            .await
        {
            Ok(claimed) => {
                runner.metrics.jobs_claimed(claimed.len());
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
                () = runner.work.notified() => {}
                () = tokio::time::sleep(StdDuration::from_secs(1)) => {}
                () = shutdown.requested() => return,
            }
            continue;
        }
        // A full batch may mean more work: let an idle worker start on it meanwhile.
        if claimed.len() as u32 == runner.config.batch_size {
            runner.work.notify_one();
        }
        run_batch(&runner, &owner, claimed).await;
    }
}

async fn run_batch(runner: &JobRunner, owner: &str, claimed: Vec<ClaimedJob>) {
    let started = std::time::Instant::now();
    let n_jobs = claimed.len();
    let ids: Vec<_> = claimed.iter().map(|c| c.job.certificate_id).collect();
    let certificates: Result<HashMap<_, _>, _> = runner
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
                    wait_for_agent_csr(runner, owner, &job, cert).await;
                    continue;
                }
                Some(cert) => match runner.issuers.issuer_handle(&cert.issuer_id).await {
                    Ok(Issuer::Local(ca)) => Ok((cert.clone(), ca)),
                    Ok(Issuer::Acme(state)) => {
                        // An order waits on the CA and DNS for seconds: it runs as its own task.
                        let task = run_acme_job(runner.clone(), owner.to_owned(), job, cert.clone(), state);
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
    let max_validity = runner.config.max_validity;
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
        runner
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
        match runner.store.complete_jobs(owner, &completions, now()).await {
            Ok(stored) => record_completions(runner, &completions, &stored, &issuer_of, &mut finished),
            Err(error) => {
                // One bad row (say, a serial collision) must not sink the batch: retry singly.
                tracing::warn!(%error, n = completions.len(), "batch commit failed; committing one by one");
                for completion in completions {
                    match runner
                        .store
                        .complete_jobs(owner, std::slice::from_ref(&completion), now())
                        .await
                    {
                        Ok(stored) => record_completions(
                            runner,
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
            runner
                .config
                .retry
                .next_delay(claimed.attempt, rand::rng().random::<f64>())
                .map(|delay| now() + delay)
        } else {
            None
        };
        tracing::warn!(job = %claimed.job.id, certificate = %claimed.job.certificate_id, error = %failure.message,
            retry_at = ?retry_at, "job attempt failed");
        runner.metrics.job_failed(claimed.job.kind.as_str());
        runner.metrics.issuance(
            claimed.job.kind.as_str(),
            &issuer_of(claimed.job.certificate_id),
            "failure",
        );
        match runner
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
    runner.certificates.notify_finished(&finished);
    tracing::debug!(n_jobs, ?fetched, ?signed_at, commit = ?commit_started.elapsed(), total = ?started.elapsed(), "job batch done");
}

/// Puts a job back until its agent's CSR arrives. The CSR's arrival makes it runnable at once
/// (and a CSR refused because the job was running here is sent again within seconds), so the
/// long delay only keeps jobs of absent agents from being claimed over and over.
async fn wait_for_agent_csr(runner: &JobRunner, owner: &str, claimed: &ClaimedJob, cert: &Certificate) {
    let agent = cert.agent_id.as_deref().unwrap_or("?");
    let reason = format!(
        "waiting for agent {agent} to send a CSR (it asks for work every {} s)",
        AGENT_POLL_INTERVAL.whole_seconds()
    );
    let now = now();
    if let Err(error) = runner
        .store
        .defer_job(owner, claimed, &reason, now + AGENT_CSR_RECHECK, now)
        .await
    {
        tracing::warn!(job = %claimed.job.id, %error, "deferring the job failed; the lease will expire");
    }
}
