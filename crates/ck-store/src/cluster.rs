//! Several nodes on one database: the leader lease (holder, fencing epoch, expiry) and the
//! nodes' heartbeats. The lease is one row updated with a conditional upsert, so taking it
//! over is a single atomic statement on both engines.

use ck_domain::Job;
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::jobs::insert_jobs;
use crate::rows::{from_ms, to_ms};
use crate::{Store, StoreError};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Which lease (`leader`).
    pub name: String,
    /// The node holding it.
    pub holder: String,
    /// Grows with every new term.
    pub epoch: i64,
    /// When it runs out unless renewed.
    pub expires_at: OffsetDateTime,
    /// When the current term began.
    pub acquired_at: OffsetDateTime,
}

/// What a singleton write must still hold to land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease.
    pub lease: String,
    /// This node.
    pub holder: String,
    /// The term the write belongs to.
    pub epoch: i64,
}

/// A node as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its id.
    pub node_id: String,
    /// Where its API listens.
    pub address: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    pub last_seen: OffsetDateTime,
}

fn lease_from_row(row: &AnyRow) -> Result<Lease, StoreError> {
    Ok(Lease {
        name: row.try_get("name")?,
        holder: row.try_get("holder")?,
        epoch: row.try_get("epoch")?,
        expires_at: from_ms(row.try_get("expires_at")?)?,
        acquired_at: from_ms(row.try_get("acquired_at")?)?,
    })
}

impl Store {
    /// Takes or renews `lease` for `holder` until `until`, if it is free, expired at `now`, or
    /// already `holder`'s. Returns the epoch held afterwards, or `None` when another node holds
    /// it. A renewal keeps the epoch; a new term (another holder, or the same one after its
    /// lease ran out) increments it.
    pub async fn acquire_lease(
        &self,
        lease: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<i64>, StoreError> {
        // In SET, column names are the row's old values on both engines.
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, epoch, expires_at, acquired_at) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET \
               epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $4 \
                       THEN leases.epoch ELSE leases.epoch + 1 END, \
               acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $4 \
                       THEN leases.acquired_at ELSE excluded.acquired_at END, \
               holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4 \
             RETURNING epoch",
        )
        .bind(lease)
        .bind(holder)
        .bind(to_ms(until))
        .bind(to_ms(now))
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| r.try_get("epoch").map_err(StoreError::from)).transpose()
    }

    /// Gives a lease up at once (graceful shutdown), if `holder` still holds it in `epoch`.
    pub async fn release_lease(&self, fence: &Fence, now: OffsetDateTime) -> Result<bool, StoreError> {
        let res = sqlx::query("UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3 AND epoch = $4")
            .bind(to_ms(now))
            .bind(&fence.lease)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .execute(&self.write)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The lease as stored, if anyone ever took it.
    pub async fn lease(&self, lease: &str) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query("SELECT name, holder, epoch, expires_at, acquired_at FROM leases WHERE name = $1")
            .bind(lease)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Inserts jobs on behalf of the lease holder: refused with [`StoreError::Fenced`] when the
    /// lease has moved to another holder or term, so a paused former leader's scan lands
    /// nothing. Returns how many jobs were inserted (a certificate with an active job is
    /// skipped).
    pub async fn enqueue_fenced(&self, jobs: &[&Job], fence: &Fence) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        self.check_fence(&mut tx, fence).await?;
        let inserted = if jobs.is_empty() {
            0
        } else {
            insert_jobs(&mut *tx, jobs).await?
        };
        tx.commit().await?;
        Ok(inserted)
    }

    /// Refuses with [`StoreError::Fenced`] unless `fence` still holds its lease; on PostgreSQL the
    /// lease row stays share-locked until the transaction ends, so no takeover slips in between.
    pub(crate) async fn check_fence(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        let held = sqlx::query(sql!(
            "SELECT epoch FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3{}",
            self.backend.for_share()
        ))
        .bind(&fence.lease)
        .bind(&fence.holder)
        .bind(fence.epoch)
        .fetch_optional(&mut **tx)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(StoreError::Fenced(format!(
                "lease '{}' epoch {} is no longer held by {}",
                fence.lease, fence.epoch, fence.holder
            ))),
        }
    }

    /// Records a node's heartbeat.
    pub async fn node_heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cluster_nodes (node_id, address, version, started_at, last_seen) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, version = excluded.version, \
             started_at = excluded.started_at, last_seen = excluded.last_seen",
        )
        .bind(&node.node_id)
        .bind(&node.address)
        .bind(&node.version)
        .bind(to_ms(node.started_at))
        .bind(to_ms(node.last_seen))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Every node that ever sent a heartbeat, by id.
    pub async fn cluster_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT node_id, address, version, started_at, last_seen FROM cluster_nodes ORDER BY node_id")
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(NodeRecord {
                    node_id: row.try_get("node_id")?,
                    address: row.try_get("address")?,
                    version: row.try_get("version")?,
                    started_at: from_ms(row.try_get("started_at")?)?,
                    last_seen: from_ms(row.try_get("last_seen")?)?,
                })
            })
            .collect()
    }
}
