//! The leader's singleton loops: the renewal scan (every certificate inside its renewal window
//! gets one renewal job; the database's one-active-job rule makes a second pass, or a second
//! node, harmless), the notification scans, and the issuer health checks.

use std::time::Duration;

use crate::certificates::Certificates;
use crate::cluster::Cluster;
use crate::issuers::Issuers;
use crate::notifications::Notifications;
use crate::now;
use crate::signals::Shutdown;

pub(super) async fn scheduler_loop(
    cluster: Cluster,
    certificates: Certificates,
    notifications: Notifications,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        // The scan is a singleton: only the leader runs it (at once when it becomes leader),
        // and its writes carry the epoch.
        tokio::select! {
            () = cluster.leadership_gained() => {}
            () = shutdown.requested() => return,
        }
        match certificates.enqueue_due_renewals().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "renewals enqueued"),
            Err(error) => tracing::warn!(%error, "renewal scan failed; trying again next interval"),
        }
        // Expiry thresholds and silent agents are announced by the same singleton pass; their
        // events are deduplicated, so a pass on a deposed leader repeats nothing.
        if let Err(error) = notifications.scan_expiry_thresholds(now()).await {
            tracing::warn!(%error, "expiry threshold scan failed; trying again next interval");
        }
        if let Err(error) = notifications.scan_offline_agents(now()).await {
            tracing::warn!(%error, "offline agent scan failed; trying again next interval");
        }
        if let Err(error) = notifications.prune_notifications(now()).await {
            tracing::warn!(%error, "pruning old notifications failed; trying again next interval");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
    }
}

/// Checks every ACME issuer now and then: the directory answers and the account is valid
/// (registering it first if no node has yet). The result is stored (for `GET /issuers`) and
/// exported as `certkeeper_issuer_healthy`.
pub(super) async fn issuer_health_loop(cluster: Cluster, issuers: Issuers, interval: Duration, mut shutdown: Shutdown) {
    loop {
        // Checks cost the CAs requests: one node, the leader, does them.
        tokio::select! {
            () = cluster.leadership_gained() => {}
            () = shutdown.requested() => return,
        }
        issuers.check_issuers().await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.requested() => return,
        }
    }
}
