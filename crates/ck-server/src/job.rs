//! A new job, as every service that enqueues one makes it.

use ck_domain::{CertificateId, Job, JobId, JobKind, JobState};
use time::OffsetDateTime;

/// A pending job of `kind` for `certificate_id`, runnable at `now`, tried at most
/// `max_attempts` times.
pub(crate) fn new_job(certificate_id: CertificateId, kind: JobKind, now: OffsetDateTime, max_attempts: u32) -> Job {
    Job {
        id: JobId::new(),
        kind,
        certificate_id,
        state: JobState::Pending,
        attempts: 0,
        max_attempts,
        run_after: now,
        last_error: None,
        problem: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}
