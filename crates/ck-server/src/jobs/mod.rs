//! The background loops of a node: job workers (claim, sign or order, commit in batches), the
//! leader's singleton loops (renewal scan, notification scans, issuer health), and the loops
//! every node runs (leadership lease, database probe, notification sending, credential reload,
//! cluster notices).
//!
//! Workers claim jobs in batches, sign them on blocking threads, and commit every success of a
//! batch in one transaction. Under load this turns one commit per certificate into one commit
//! per batch; when idle a batch is a single job, so latency stays low.

mod acme_jobs;
mod issuance;
mod notices;
mod runner;
mod scheduler;
mod workers;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::signals::Shutdown;
use crate::{ControlPlane, ServiceError, now};
use runner::JobRunner;

/// Starts the leadership loop, the workers, the scheduler and the other loops of this node. On
/// start, jobs and notifications this node was handling when it died are put back at once.
/// Returns the tasks so the caller can wait for them at shutdown.
pub async fn spawn_background_loops(
    plane: &ControlPlane,
    address: Option<String>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServiceError> {
    let config = plane.config.clone();
    let store = plane.store().clone();
    let released = store.release_jobs_of(&config.node_id, now()).await?;
    if released > 0 {
        tracing::info!(released, "took back the jobs this node was running before it stopped");
    }
    let released = store.release_notifications_of(&config.node_id, now()).await?;
    if released > 0 {
        tracing::info!(
            released,
            "took back the notifications this node was sending before it stopped"
        );
    }
    let shutdown = Shutdown::new(shutdown);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crate::cluster::leadership_loop(
        plane.cluster.clone(),
        address,
        shutdown.clone(),
    )));
    let runner = JobRunner {
        store,
        config: config.clone(),
        metrics: plane.metrics.clone(),
        cluster: plane.cluster.clone(),
        issuers: plane.issuers.clone(),
        certificates: plane.certificates.clone(),
        work: plane.work.clone(),
        acme_orders: Arc::new(Semaphore::new(config.acme_concurrency.max(1))),
    };
    for worker_idx in 0..config.workers.max(1) {
        tasks.push(tokio::spawn(workers::worker_loop(
            runner.clone(),
            worker_idx,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(scheduler::scheduler_loop(
        plane.cluster.clone(),
        plane.certificates.clone(),
        plane.notifications.clone(),
        config.scheduler_interval,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(scheduler::issuer_health_loop(
        plane.cluster.clone(),
        plane.issuers.clone(),
        config.issuer_health_interval,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(notices::notices_loop(plane.clone(), shutdown.clone())));
    tasks.push(tokio::spawn(crate::cluster::probe_loop(
        plane.cluster.clone(),
        plane.work.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::notifications::notification_loop(
        plane.notifications.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::access::credentials_loop(
        plane.access.clone(),
        shutdown,
    )));
    Ok(tasks)
}
