//! Leadership among nodes sharing one database. Every node serves the whole API and runs job
//! workers; only the holder of the `leader` lease runs the singleton loops (renewal scan,
//! issuer health checks), and its writes carry the lease's epoch.
//!
//! The numbers: the lease lasts [`LEASE_TTL`] (6 s) and is renewed every [`RENEW_EVERY`]
//! (1 s). A leader that has not renewed for [`STEP_DOWN_AFTER`] (3 s) stops acting as leader,
//! so it has stopped at least 3 s before anyone can take the lease: that margin covers clock
//! differences between nodes (each node's clock sets the expiry it writes and the expiry it
//! compares). Should a paused leader still write after that, its epoch is stale and the
//! database refuses the write (`Store::enqueue_fenced`). A graceful shutdown releases the
//! lease, so a rolling restart hands over within a renewal interval instead of after 6 s.

//!
//! The cluster service also knows whether the database answers ([`outage`]): every service
//! asks it before a write, and tells it when a call found the database gone.

mod outage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ck_store::{AuditRecord, Fence, NodeRecord, Store};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::signals::{Shutdown, WorkAvailable};
use crate::{ServiceError, now};

/// The lease the singleton loops need.
pub const LEADER_LEASE: &str = "leader";
/// How long a lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the holder renews it (and every node tries to take it, and heartbeats).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A leader that could not renew for this long stops leading.
pub const STEP_DOWN_AFTER: Duration = Duration::from_secs(3);

/// This node's view of the lease: `Some(epoch)` while it leads.
pub(crate) struct Leadership {
    state: watch::Sender<Option<i64>>,
    started_at: time::OffsetDateTime,
}

impl Default for Leadership {
    fn default() -> Self {
        Self {
            state: watch::channel(None).0,
            started_at: now(),
        }
    }
}

/// The cluster as one node sees it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This node's id.
    pub node_id: String,
    /// The lease holder and its epoch, if the lease is live.
    pub leader: Option<(String, i64)>,
    /// Every node that sent a heartbeat.
    pub nodes: Vec<NodeRecord>,
}

/// Leadership and the database's reachability on this node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<ClusterState>);

/// What [`Cluster`] holds, shared by its clones.
pub struct ClusterState {
    store: Store,
    node_id: String,
    metrics: Arc<Metrics>,
    leadership: Arc<Leadership>,
    database: Arc<outage::DatabaseStatus>,
}

impl std::ops::Deref for Cluster {
    type Target = ClusterState;

    fn deref(&self) -> &ClusterState {
        &self.0
    }
}

impl Cluster {
    pub(crate) fn new(store: Store, node_id: String, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(ClusterState {
            store,
            node_id,
            metrics,
            leadership: Arc::new(Leadership::default()),
            database: Arc::new(outage::DatabaseStatus::default()),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the database answered the last probe.
    pub fn database_reachable(&self) -> bool {
        self.database.is_up()
    }

    /// A call found the database unreachable: reads go to the caches and writes are refused
    /// until the probe finds it back.
    pub(crate) fn database_unreachable(&self) {
        self.database.report_down(&self.metrics);
    }

    /// Asks the database whether it answers now (readiness checks).
    pub async fn ping_database(&self) -> Result<(), ServiceError> {
        Ok(self.store.ping().await?)
    }

    /// Keeps an audit record in memory until the database answers again.
    pub(crate) fn defer_audit(&self, record: AuditRecord) {
        self.database.defer_audit(record);
    }

    /// The fence for singleton writes, while this node leads.
    pub fn leader_fence(&self) -> Option<Fence> {
        let epoch = (*self.leadership.state.borrow())?;
        Some(Fence {
            lease: LEADER_LEASE.to_owned(),
            holder: self.node_id.clone(),
            epoch,
        })
    }

    /// Returns once this node leads (at once if it does).
    pub(crate) async fn leadership_gained(&self) {
        let mut state = self.leadership.state.subscribe();
        let _ = state.wait_for(Option::is_some).await;
    }

    /// Nodes, leader and epoch.
    pub async fn cluster(&self) -> Result<ClusterView, ServiceError> {
        let store = &self.store;
        let leader = store
            .lease(LEADER_LEASE)
            .await?
            .filter(|lease| lease.expires_at > now())
            .map(|lease| (lease.holder, lease.epoch));
        Ok(ClusterView {
            node_id: self.node_id.clone(),
            leader,
            nodes: store.cluster_nodes().await?,
        })
    }

    fn set_leadership(&self, epoch: Option<i64>) {
        let node = &self.node_id;
        self.leadership.state.send_if_modified(|state| {
            if *state == epoch {
                return false;
            }
            match epoch {
                Some(epoch) => tracing::info!(node = %node, epoch, "this node leads now"),
                None => tracing::info!(node = %node, "this node no longer leads"),
            }
            self.metrics.leadership(epoch.is_some());
            *state = epoch;
            true
        });
    }
}

/// Heartbeats, takes or renews the lease, and steps down in time; releases it on shutdown.
pub(crate) async fn leadership_loop(cluster: Cluster, address: Option<String>, mut shutdown: Shutdown) {
    let node_id = cluster.node_id.clone();
    let mut last_renewed: Option<Instant> = None;
    loop {
        let record = NodeRecord {
            node_id: node_id.clone(),
            address: address.clone(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            started_at: cluster.leadership.started_at,
            last_seen: now(),
        };
        // During a database outage the probe has said so once; no attempt, no warning per second.
        let reachable = cluster.database.is_up();
        if reachable && let Err(error) = cluster.store.node_heartbeat(&record).await {
            tracing::warn!(%error, "node heartbeat failed");
        }
        // Waits never run past the step-down deadline, so a leader whose database hangs
        // stops leading on time.
        let until_step_down = |last: Option<Instant>| {
            last.map_or(RENEW_EVERY, |at| {
                STEP_DOWN_AFTER
                    .saturating_sub(at.elapsed())
                    .clamp(Duration::from_millis(10), RENEW_EVERY)
            })
        };
        let now = now();
        let until = now + LEASE_TTL;
        let attempt = if reachable {
            tokio::time::timeout(
                until_step_down(last_renewed),
                cluster.store.acquire_lease(LEADER_LEASE, &node_id, now, until),
            )
            .await
        } else {
            Ok(Err(ck_store::StoreError::Disconnected(
                "the probe finds the database down".to_owned(),
            )))
        };
        match attempt {
            Ok(Err(ck_store::StoreError::Disconnected(_))) => {}
            Ok(Ok(Some(epoch))) => {
                last_renewed = Some(Instant::now());
                cluster.set_leadership(Some(epoch));
            }
            Ok(Ok(None)) => {
                last_renewed = None;
                cluster.set_leadership(None);
            }
            Ok(Err(error)) => tracing::warn!(%error, "renewing the leader lease failed"),
            Err(_) => tracing::warn!("renewing the leader lease timed out"),
        }
        if last_renewed.is_some_and(|at| at.elapsed() >= STEP_DOWN_AFTER) {
            last_renewed = None;
            cluster.set_leadership(None);
        }
        tokio::select! {
            () = tokio::time::sleep(until_step_down(last_renewed)) => {}
            () = shutdown.requested() => {
                if let Some(fence) = cluster.leader_fence() {
                    cluster.set_leadership(None);
                    match cluster.store.release_lease(&fence, crate::now()).await {
                        Ok(_) => tracing::info!(epoch = fence.epoch, "released the leader lease"),
                        Err(error) => tracing::warn!(%error, "releasing the leader lease failed; it runs out in 6 s"),
                    }
                }
                return;
            }
        }
    }
}

/// Asks the database every second whether it answers; see [`outage`].
pub(crate) async fn probe_loop(cluster: Cluster, work: WorkAvailable, shutdown: Shutdown) {
    outage::probe_loop(&cluster.store, &cluster.database, &cluster.metrics, &work, shutdown).await;
}
