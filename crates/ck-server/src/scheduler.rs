//! The renewal scheduler: finds certificates inside their renewal window and enqueues one
//! renewal job each. The database's one-active-job rule makes a second pass (or a second
//! node) harmless.

use ck_domain::JobKind;

use crate::workers::Shutdown;
use crate::{ControlPlane, ServiceError, now};

pub(crate) async fn scheduler_loop(control_plane: ControlPlane, mut shutdown: Shutdown) {
    let interval = control_plane.inner.config.scheduler_interval;
    loop {
        // The scan is a singleton: only the leader runs it (at once when it becomes leader),
        // and its writes carry the epoch.
        tokio::select! {
            () = control_plane.leadership_gained() => {}
            () = shutdown.requested() => return,
        }
        match enqueue_due_renewals(&control_plane).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "renewals enqueued"),
            Err(error) => tracing::warn!(%error, "renewal scan failed; trying again next interval"),
        }
        // Expiry thresholds and silent agents are announced by the same singleton pass; their
        // events are deduplicated, so a pass on a deposed leader repeats nothing.
        if let Err(error) = control_plane.scan_expiry_thresholds(now()).await {
            tracing::warn!(%error, "expiry threshold scan failed; trying again next interval");
        }
        if let Err(error) = control_plane.scan_offline_agents(now()).await {
            tracing::warn!(%error, "offline agent scan failed; trying again next interval");
        }
        if let Err(error) = control_plane.prune_notifications(now()).await {
            tracing::warn!(%error, "pruning old notifications failed; trying again next interval");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
    }
}

impl ControlPlane {
    /// One scheduler pass: enqueues a renewal for every due certificate without an active job.
    /// Returns how many jobs were created. Only the leader may run it (`Forbidden` otherwise),
    /// and its writes are refused once the lease has moved on.
    pub async fn enqueue_due_renewals(&self) -> Result<usize, ServiceError> {
        enqueue_due_renewals(self).await
    }
}

async fn enqueue_due_renewals(control_plane: &ControlPlane) -> Result<usize, ServiceError> {
    let inner = &control_plane.inner;
    let mut created = 0;
    loop {
        let fence = control_plane
            .leader_fence()
            .ok_or_else(|| ServiceError::Forbidden("this node is not the leader".to_owned()))?;
        let now = now();
        let due = inner
            .store
            .due_for_renewal(now, inner.config.retry.max_delay, 500)
            .await?;
        let jobs: Vec<_> = due
            .iter()
            .map(|id| control_plane.new_job(*id, JobKind::Renew, now))
            .collect();
        let refs: Vec<_> = jobs.iter().collect();
        let created_this_round = usize::try_from(inner.store.enqueue_fenced(&refs, &fence).await?).unwrap_or(0);
        created += created_this_round;
        if created_this_round > 0 {
            inner.work_available.notify_waiters();
        }
        if due.len() < 500 || created_this_round == 0 {
            return Ok(created);
        }
    }
}

/// Checks every ACME issuer now and then: the directory answers and the account is valid
/// (registering it first if no node has yet). The result is stored (for `GET /issuers`) and
/// exported as `certkeeper_issuer_healthy`.
pub(crate) async fn issuer_health_loop(control_plane: ControlPlane, mut shutdown: Shutdown) {
    let interval = control_plane.inner.config.issuer_health_interval;
    loop {
        // Checks cost the CAs requests: one node, the leader, does them.
        tokio::select! {
            () = control_plane.leadership_gained() => {}
            () = shutdown.requested() => return,
        }
        control_plane.check_issuers().await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
    }
}

impl ControlPlane {
    /// One health pass over the issuers, as the leader (its writes are fenced): ACME issuers'
    /// directory and account, and how long the local CA has left.
    pub(crate) async fn check_issuers(&self) {
        let inner = &self.inner;
        for (id, issuer) in inner.issuers.all() {
            let state = match issuer {
                crate::issuers::Issuer::Acme(state) => state,
                crate::issuers::Issuer::Local(ca) => {
                    let check = local_ca_check(ca.not_after(), now());
                    if !self.record_issuer_health(&id, check).await {
                        return;
                    }
                    continue;
                }
            };
            let check = match state.ready(&inner.store, &inner.issuers.responder).await {
                Err(failure) => ck_acme::AccountCheck {
                    healthy: false,
                    detail: failure.message,
                },
                Ok(_) => match inner.store.issuer(id.as_str()).await {
                    Ok(Some(record)) => match record.account_credentials {
                        Some(credentials) => ck_acme::AcmeIssuer::check(&state.config, &credentials).await,
                        None => ck_acme::AccountCheck {
                            healthy: false,
                            detail: "no account: it was deactivated; the next order registers a new one".to_owned(),
                        },
                    },
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::warn!(issuer = %id, %error, "issuer health: reading the issuer failed");
                        continue;
                    }
                },
            };
            if !self.record_issuer_health(&id, check).await {
                return;
            }
        }
    }

    /// Logs, exports and stores one issuer's health; `false` when this node no longer leads
    /// (the pass stops).
    async fn record_issuer_health(&self, id: &ck_domain::IssuerId, check: ck_acme::AccountCheck) -> bool {
        let inner = &self.inner;
        if !check.healthy {
            tracing::warn!(issuer = %id, detail = %check.detail, "issuer unhealthy");
        }
        inner.metrics.issuer_health(id.as_str(), check.healthy);
        let health = ck_store::IssuerHealth {
            healthy: check.healthy,
            detail: check.detail,
            checked_at: now(),
        };
        let Some(fence) = self.leader_fence() else {
            tracing::info!("no longer the leader: the health pass stops");
            return false;
        };
        match inner.store.set_issuer_health(id.as_str(), &health, &fence).await {
            Ok(()) => true,
            Err(ck_store::StoreError::Fenced(reason)) => {
                tracing::warn!(%reason, "another node leads now: the health pass stops");
                false
            }
            Err(error) => {
                tracing::warn!(issuer = %id, %error, "storing the issuer health failed");
                true
            }
        }
    }
}

/// A local CA is unhealthy once its intermediate has less than this left: every leaf it signs
/// ends with the intermediate, so renewals would bring ever shorter certificates.
const LOCAL_CA_MIN_REMAINING: time::Duration = time::Duration::days(30);

/// The health of a local CA whose intermediate expires at `not_after`.
fn local_ca_check(not_after: time::OffsetDateTime, now: time::OffsetDateTime) -> ck_acme::AccountCheck {
    let left = not_after - now;
    if left < LOCAL_CA_MIN_REMAINING {
        ck_acme::AccountCheck {
            healthy: false,
            detail: format!(
                "the CA's intermediate expires at {not_after} ({} days left): the leaves it signs end then too; \
                 replace the local CA before then",
                left.whole_days().max(0)
            ),
        }
    } else {
        ck_acme::AccountCheck {
            healthy: true,
            detail: format!("the CA's intermediate is valid until {not_after}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    #[test]
    fn a_local_ca_is_unhealthy_in_its_last_thirty_days() {
        let now = datetime!(2026-01-01 0:00 UTC);
        assert!(super::local_ca_check(now + time::Duration::days(31), now).healthy);
        let late = super::local_ca_check(now + time::Duration::days(29), now);
        assert!(!late.healthy);
        assert!(late.detail.contains("29 days left"), "{}", late.detail);
        assert!(!super::local_ca_check(now - time::Duration::days(1), now).healthy);
    }
}
