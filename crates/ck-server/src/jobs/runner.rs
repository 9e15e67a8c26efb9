//! What the job workers share: the services a job touches, and how finished jobs are
//! recorded.

use std::sync::Arc;

use ck_domain::{CertificateId, JobId};
use ck_store::{Completion, Store};
use tokio::sync::Semaphore;

use crate::ServerConfig;
use crate::certificates::Certificates;
use crate::cluster::Cluster;
use crate::issuers::Issuers;
use crate::metrics::Metrics;
use crate::signals::WorkAvailable;

/// The services the job workers use. Cheap to clone.
#[derive(Clone)]
pub(crate) struct JobRunner {
    pub(super) store: Store,
    pub(super) config: Arc<ServerConfig>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) cluster: Cluster,
    pub(super) issuers: Issuers,
    pub(super) certificates: Certificates,
    pub(super) work: WorkAvailable,
    /// Bounds the ACME orders in flight on this node.
    pub(super) acme_orders: Arc<Semaphore>,
}

pub(crate) fn record_completions(
    runner: &JobRunner,
    completions: &[Completion],
    stored: &[Option<u32>],
    issuer_of: &dyn Fn(CertificateId) -> String,
    finished: &mut Vec<JobId>,
) {
    for (completion, version) in completions.iter().zip(stored) {
        let job = &completion.claimed.job;
        match version {
            Some(version) => {
                tracing::info!(certificate = %job.certificate_id, version, serial = %completion.version.serial,
                    kind = %job.kind, "certificate issued");
                runner
                    .metrics
                    .issuance(job.kind.as_str(), &issuer_of(job.certificate_id), "success");
                finished.push(job.id);
            }
            None => tracing::warn!(job = %job.id, "job was taken over by another worker; result dropped"),
        }
    }
}
