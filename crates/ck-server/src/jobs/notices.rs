//! The other nodes' notices (PostgreSQL LISTEN/NOTIFY), handed to the service each concerns.

use crate::ControlPlane;
use crate::signals::Shutdown;

/// Follows the other nodes' notices (PostgreSQL): finished jobs wake waiting requests here,
/// changed credentials are reloaded at once. Polling stays as the fallback.
pub(super) async fn notices_loop(plane: ControlPlane, mut shutdown: Shutdown) {
    let store = plane.store().clone();
    let node_id = plane.cluster.node_id().to_owned();
    loop {
        let mut listener = match store.listen().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "cannot listen for cluster notices yet; retrying in 2 s");
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => continue,
                    () = shutdown.requested() => return,
                }
            }
        };
        loop {
            let notice = tokio::select! {
                notice = listener.next() => notice,
                () = shutdown.requested() => return,
            };
            match notice {
                Ok(ck_store::Notice::JobsFinished(ids)) => plane.certificates.wake_waiters(&ids),
                Ok(ck_store::Notice::CredentialsChanged) => {
                    if let Err(error) = plane.access.refresh_credentials().await {
                        tracing::warn!(%error, "reloading tokens failed; the previous set stays in force");
                    }
                }
                Ok(ck_store::Notice::AccountChanged { issuer, node }) => {
                    if node != node_id
                        && let Ok(issuer) = issuer.parse()
                    {
                        plane.issuers.account_changed_elsewhere(&issuer, &node).await;
                    }
                }
                Ok(ck_store::Notice::Revoked { issuer, node }) => {
                    if node != node_id
                        && let Ok(issuer) = issuer.parse()
                    {
                        plane.pki.revoked_elsewhere(&issuer).await;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "the notice connection failed; listening again");
                    break;
                }
            }
        }
    }
}
