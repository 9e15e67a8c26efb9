//! Group commit of new certificates, and of audit records.
//!
//! Each create request would otherwise be its own transaction, and SQLite has one writer: under
//! load the requests queue on it one statement at a time. Instead, requests hand their rows to
//! one task, which writes everything that arrived meanwhile in a single transaction of
//! multi-row inserts. Idle, a batch is one request and the latency is the same as before.
//! Audit records of API calls go the same way: every state-changing call waits for its record
//! to be committed, without making each record a transaction of its own.

use std::sync::Arc;

use ck_domain::{Certificate, Job};
use ck_store::{AuditRecord, Store};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::ServiceError;

/// At most this many certificates per transaction.
const MAX_BATCH: usize = 256;

struct PendingCreate {
    certificate: Certificate,
    job: Job,
    reply: oneshot::Sender<Result<(), ServiceError>>,
}

/// The handle requests use; the writer task stops when every handle is dropped.
#[derive(Clone)]
pub(crate) struct CreateQueue {
    sender: mpsc::Sender<PendingCreate>,
}

impl CreateQueue {
    /// Starts the writer task; it wakes a worker after each committed batch.
    pub(crate) fn start(store: Store, work_available: Arc<Notify>) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(store, receiver, work_available));
        Self { sender }
    }

    /// Stores a certificate and its first job; returns once they are committed.
    pub(crate) async fn create(&self, certificate: Certificate, job: Job) -> Result<(), ServiceError> {
        let (reply, answer) = oneshot::channel();
        let pending = PendingCreate {
            certificate,
            job,
            reply,
        };
        let gone = || ServiceError::Unavailable("the certificate writer has stopped".to_owned());
        self.sender.send(pending).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<PendingCreate>, work_available: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let started = std::time::Instant::now();
        let n_created = batch.len();
        let pairs: Vec<(&Certificate, &Job)> = batch.iter().map(|p| (&p.certificate, &p.job)).collect();
        match store.create_certificates(&pairs).await {
            Ok(()) => {
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Ok(()));
                }
            }
            // One bad row must not fail its neighbours: write them one by one.
            Err(_) if batch.len() > 1 => {
                for pending in batch.drain(..) {
                    let res = store.create_certificate(&pending.certificate, &pending.job).await;
                    let _ = pending.reply.send(res.map_err(ServiceError::from));
                }
            }
            Err(error) => {
                if let Some(pending) = batch.pop() {
                    let _ = pending.reply.send(Err(ServiceError::from(error)));
                }
            }
        }
        tracing::debug!(n_created, elapsed = ?started.elapsed(), "create batch committed");
        work_available.notify_one();
    }
}

struct PendingAudit {
    record: AuditRecord,
    reply: oneshot::Sender<Result<(), ServiceError>>,
}

/// The handle requests use to append audit records.
#[derive(Clone)]
pub(crate) struct AuditQueue {
    sender: mpsc::Sender<PendingAudit>,
}

impl AuditQueue {
    /// Starts the writer task.
    pub(crate) fn start(store: Store) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_audit_batches(store, receiver));
        Self { sender }
    }

    /// Appends a record; returns once it is committed.
    pub(crate) async fn append(&self, record: AuditRecord) -> Result<(), ServiceError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ServiceError::Unavailable("the audit writer has stopped".to_owned());
        self.sender
            .send(PendingAudit { record, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn write_audit_batches(store: Store, mut receiver: mpsc::Receiver<PendingAudit>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let records: Vec<AuditRecord> = batch.iter().map(|p| p.record.clone()).collect();
        // Records have fresh UUIDv7 ids and no other constraint: a batch fails as a whole or
        // not at all.
        let result = store
            .append_audit(&records)
            .await
            .map_err(|e| (matches!(e, ck_store::StoreError::Disconnected(_)), e.to_string()));
        for pending in batch.drain(..) {
            let _ = pending.reply.send(result.clone().map_err(|(disconnected, message)| {
                if disconnected {
                    crate::outage::unreachable()
                } else {
                    ServiceError::Unavailable(message)
                }
            }));
        }
    }
}
