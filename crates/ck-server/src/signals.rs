//! The two signals the services and the background loops share: "stop" and "work is waiting".
//!
//! A leaf module: every loop and every service that enqueues jobs uses these types, so they
//! live apart from both (a loop module that owned them would be imported back by its users).

use std::sync::Arc;

use tokio::sync::{Notify, watch};

/// Asks the loops to stop; they finish the batch in hand first.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub(crate) fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    /// Whether shutdown was requested already.
    pub(crate) fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown was requested.
    pub(crate) async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Wakes idle job workers when a job was enqueued on this node (or the database is back).
/// Cheap to clone: every clone wakes the same workers.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkAvailable(Arc<Notify>);

impl WorkAvailable {
    /// Wakes one idle worker (or the next one to wait).
    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    /// Wakes every worker waiting now.
    pub(crate) fn notify_waiters(&self) {
        self.0.notify_waiters();
    }

    /// Resolves when woken.
    pub(crate) async fn notified(&self) {
        self.0.notified().await;
    }
}
