//! Group commit of new certificates.
//!
//! Each create request would otherwise be its own transaction, and SQLite has one writer: under
//! load the requests queue on it one statement at a time. Instead, requests hand their rows to
//! one task, which writes everything that arrived meanwhile in a single transaction of
//! multi-row inserts. Idle, a batch is one request and the latency is the same as before.

use ck_domain::{Certificate, Job};
use ck_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::ServiceError;
use crate::signals::WorkAvailable;

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
    pub(crate) fn start(store: Store, work_available: WorkAvailable) -> Self {
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

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<PendingCreate>, work_available: WorkAvailable) {
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
