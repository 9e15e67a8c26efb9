//! Riding out a database outage.
//!
//! A probe asks the database every second whether it answers. While it does not, certificate
//! reads (metadata and chains, never keys) are served from what this node read last, writes
//! are refused at once with 503 and `Retry-After` instead of hanging on the connection pool,
//! the loops pause, and the audit records of refused calls wait in memory. When the database
//! answers again, the records are written and everything resumes without a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ck_domain::{Certificate, CertificateId, CertificateVersion};
use ck_store::AuditRecord;

use crate::{ControlPlane, ServiceError};

/// How often the probe asks the database, and how long it waits for an answer.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a client is told to wait before writing again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// At most this many certificates (and as many chains) are kept for outages.
const MAX_CACHED: usize = 100_000;

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
    pub(crate) fn mark_down(&self) -> bool {
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

/// The last certificates and chains this node read, for reads during an outage.
pub(crate) struct ReadCache {
    max_age: Duration,
    certificates: Mutex<HashMap<CertificateId, (Instant, Certificate)>>,
    versions: Mutex<HashMap<(CertificateId, u32), (Instant, CertificateVersion)>>,
}

impl ReadCache {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            certificates: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn keep_certificate(&self, cert: &Certificate) {
        if self.max_age.is_zero() {
            return;
        }
        if let Ok(mut map) = self.certificates.lock() {
            keep(&mut map, cert.id, cert.clone());
        }
    }

    pub(crate) fn keep_version(&self, version: &CertificateVersion) {
        if self.max_age.is_zero() {
            return;
        }
        if let Ok(mut map) = self.versions.lock() {
            // Only what a chain read needs: a cached version never carries a private key.
            keep(&mut map, (version.certificate_id, version.version), version.clone());
        }
    }

    pub(crate) fn certificate(&self, id: CertificateId) -> Option<Certificate> {
        let map = self.certificates.lock().ok()?;
        fresh(map.get(&id), self.max_age)
    }

    pub(crate) fn version(&self, id: CertificateId, number: u32) -> Option<CertificateVersion> {
        let map = self.versions.lock().ok()?;
        fresh(map.get(&(id, number)), self.max_age)
    }
}

fn keep<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, (Instant, V)>, key: K, value: V) {
    if map.len() >= MAX_CACHED && !map.contains_key(&key) {
        // Full: make room by dropping what no longer could be served anyway.
        let now = Instant::now();
        map.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(60));
        if map.len() >= MAX_CACHED {
            return;
        }
    }
    map.insert(key, (Instant::now(), value));
}

fn fresh<V: Clone>(entry: Option<&(Instant, V)>, max_age: Duration) -> Option<V> {
    entry.filter(|(at, _)| at.elapsed() <= max_age).map(|(_, v)| v.clone())
}

/// The refusal of a write while the database is unreachable.
pub(crate) fn unreachable() -> ServiceError {
    ServiceError::DatabaseUnreachable {
        retry_after: RETRY_AFTER,
    }
}

/// Probes the database every second, on every node; flips the status and, when the database
/// is back, writes the audit records that waited.
pub(crate) async fn probe_loop(control_plane: ControlPlane, mut shutdown: crate::workers::Shutdown) {
    let inner = &control_plane.inner;
    loop {
        let answered = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, inner.store.ping()).await,
            Ok(Ok(()))
        );
        if answered {
            if let Some(outage) = inner.database.mark_up() {
                tracing::warn!(outage = ?outage, "the database answers again; resuming writes and loops");
                inner.metrics.database_up(true);
                inner.work_available.notify_waiters();
            }
            flush_audit_backlog(&control_plane).await;
        } else {
            control_plane.database_unreachable();
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            () = shutdown.requested() => return,
        }
    }
}

async fn flush_audit_backlog(control_plane: &ControlPlane) {
    let inner = &control_plane.inner;
    let records = inner.database.take_audit_backlog();
    if records.is_empty() {
        return;
    }
    let n = records.len();
    match inner.store.append_audit(&records).await {
        Ok(()) => tracing::info!(records = n, "wrote the audit records held during the database outage"),
        Err(error) => {
            tracing::warn!(%error, records = n, "writing the held audit records failed; trying again");
            inner.database.return_audit_backlog(records);
        }
    }
}
