//! Riding out a database outage.
//!
//! A probe asks the database every second whether it answers. While it does not, certificate
//! reads (metadata and chains, never keys) are served from what this node read last, writes
//! are refused at once with 503 and `Retry-After` instead of hanging on the connection pool,
//! the loops pause, and the audit records of refused calls wait in memory. When the database
//! answers again, the records are written and everything resumes without a restart.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ck_store::{AuditRecord, Store};

use crate::metrics::Metrics;
use crate::signals::{Shutdown, WorkAvailable};

/// How often the probe asks the database, and how long it waits for an answer.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many audit records wait for the database; older ones are dropped (and logged).
const MAX_AUDIT_BACKLOG: usize = 100_000;

/// The database's reachability as the probe saw it last, and what waits for its return.
pub(crate) struct DatabaseStatus {
    up: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    audit_backlog: Mutex<VecDeque<AuditRecord>>,
}

impl Default for DatabaseStatus {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            audit_backlog: Mutex::new(VecDeque::new()),
        }
    }
}

impl DatabaseStatus {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Records a failed call or probe; `true` when this begins an outage.
    /// Marks the database unreachable; the first report of an outage logs it and sets the gauge.
    pub(crate) fn report_down(&self, metrics: &Metrics) {
        if self.mark_down() {
            tracing::error!(
                "the database does not answer: serving certificate reads from cache, refusing writes with 503"
            );
            metrics.database_up(false);
        }
    }

    fn mark_down(&self) -> bool {
        let began = self.up.swap(false, Ordering::AcqRel);
        if began && let Ok(mut since) = self.down_since.lock() {
            *since = Some(Instant::now());
        }
        began
    }

    /// Records an answering probe; the outage's length when this ends one.
    fn mark_up(&self) -> Option<Duration> {
        if self.up.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.down_since
            .lock()
            .ok()
            .and_then(|mut since| since.take())
            .map(|at| at.elapsed())
    }

    pub(crate) fn defer_audit(&self, record: AuditRecord) {
        if let Ok(mut backlog) = self.audit_backlog.lock() {
            if backlog.len() >= MAX_AUDIT_BACKLOG {
                backlog.pop_front();
                tracing::error!("the audit backlog of a database outage is full; dropped its oldest record");
            }
            backlog.push_back(record);
        }
    }

    fn take_audit_backlog(&self) -> Vec<AuditRecord> {
        self.audit_backlog
            .lock()
            .map(|mut backlog| backlog.drain(..).collect())
            .unwrap_or_default()
    }

    fn return_audit_backlog(&self, records: Vec<AuditRecord>) {
        if let Ok(mut backlog) = self.audit_backlog.lock() {
            for record in records.into_iter().rev() {
                backlog.push_front(record);
            }
        }
    }
}

/// Probes the database every second, on every node; flips the status and, when the database
/// is back, wakes the workers and writes the audit records that waited.
pub(super) async fn probe_loop(
    store: &Store,
    database: &DatabaseStatus,
    metrics: &Metrics,
    work: &WorkAvailable,
    mut shutdown: Shutdown,
) {
    loop {
        let answered = matches!(tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await, Ok(Ok(())));
        if answered {
            if let Some(outage) = database.mark_up() {
                tracing::warn!(outage = ?outage, "the database answers again; resuming writes and loops");
                metrics.database_up(true);
                work.notify_waiters();
            }
            flush_audit_backlog(store, database).await;
        } else {
            database.report_down(metrics);
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = shutdown.requested() => return,
        }
    }
}

async fn flush_audit_backlog(store: &Store, database: &DatabaseStatus) {
    let records = database.take_audit_backlog();
    if records.is_empty() {
        return;
    }
    let n = records.len();
    match store.append_audit(&records).await {
        Ok(()) => tracing::info!(records = n, "wrote the audit records held during the database outage"),
        Err(error) => {
            tracing::warn!(%error, records = n, "writing the held audit records failed; trying again");
            database.return_audit_backlog(records);
        }
    }
}
