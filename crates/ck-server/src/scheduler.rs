//! The renewal scheduler: finds certificates inside their renewal window and enqueues one
//! renewal job each. The database's one-active-job rule makes a second pass (or a second
//! node) harmless.

use ck_domain::JobKind;
use ck_store::EnqueueOutcome;

use crate::workers::Shutdown;
use crate::{ControlPlane, ServiceError, now};

pub(crate) async fn scheduler_loop(control_plane: ControlPlane, mut shutdown: Shutdown) {
    let interval = control_plane.inner.config.scheduler_interval;
    loop {
        match enqueue_due_renewals(&control_plane).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "renewals enqueued"),
            Err(error) => tracing::warn!(%error, "renewal scan failed; trying again next interval"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
    }
}

impl ControlPlane {
    /// One scheduler pass: enqueues a renewal for every due certificate without an active job.
    /// Returns how many jobs were created.
    pub async fn enqueue_due_renewals(&self) -> Result<usize, ServiceError> {
        enqueue_due_renewals(self).await
    }
}

async fn enqueue_due_renewals(control_plane: &ControlPlane) -> Result<usize, ServiceError> {
    let inner = &control_plane.inner;
    let mut created = 0;
    loop {
        let now = now();
        let due = inner.store.due_for_renewal(now, 500).await?;
        let mut created_this_round = 0;
        for id in &due {
            let job = control_plane.new_job(*id, JobKind::Renew, now);
            if let EnqueueOutcome::Created(_) = inner.store.enqueue(&job).await? {
                created_this_round += 1;
            }
        }
        created += created_this_round;
        if created_this_round > 0 {
            inner.work_available.notify_waiters();
        }
        if due.len() < 500 || created_this_round == 0 {
            return Ok(created);
        }
    }
}
