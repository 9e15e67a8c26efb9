//! Group commit of audit records: every state-changing call waits for its record to be
//! committed, without making each record a transaction of its own (SQLite has one writer).

use ck_store::{AuditRecord, Store};
use tokio::sync::{mpsc, oneshot};

use crate::ServiceError;

/// At most this many records per transaction.
const MAX_BATCH: usize = 256;

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
                    ServiceError::database_unreachable()
                } else {
                    ServiceError::Unavailable(message)
                }
            }));
        }
    }
}
