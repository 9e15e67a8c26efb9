//! The job queue: enqueue with one-active-job-per-certificate, atomic batch claims with leases,
//! fenced failure reports.

use ck_domain::{CertificateId, CertificateStatus, EventKind, Job, JobId, JobKind, JobState, renewal_failure_period};
use sqlx::Row;
use time::{Duration, OffsetDateTime};

use crate::notifications::{NewEvent, insert_events, rfc3339};
use crate::rows::{JOB_COLUMNS, SqlValue, bind_all, from_ms, job, to_ms, values_list};
use crate::{Store, StoreError};

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq)]
pub enum EnqueueOutcome {
    /// The job was stored.
    Created(Job),
    /// The certificate already had a pending or running job; that one is returned.
    AlreadyActive(Job),
}

impl EnqueueOutcome {
    /// The stored job, new or existing.
    pub fn job(&self) -> &Job {
        match self {
            Self::Created(job) | Self::AlreadyActive(job) => job,
        }
    }
}

/// A job claimed by a worker. `attempt` is the fencing token: reports for an older attempt
/// (a worker whose lease expired and whose job was claimed again) are refused.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The job as it is now (state running).
    pub job: Job,
    /// The attempt number this claim holds.
    pub attempt: u32,
}

/// An ACME order placed by a job, with the CSR it is (or will be) finalized with.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordedOrder {
    /// The order's URL at the CA.
    pub order_url: String,
    /// The CSR to finalize with (PEM).
    pub csr_pem: String,
    /// The private key of a server-made CSR.
    pub private_key_pem: Option<String>,
}

impl std::fmt::Debug for RecordedOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedOrder")
            .field("order_url", &self.order_url)
            .field("private_key_pem", &self.private_key_pem.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Filters for listing jobs. Results are ordered by id (creation time).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this certificate.
    pub certificate_id: Option<CertificateId>,
    /// Only jobs after this id.
    pub cursor: Option<JobId>,
    /// At most this many (1..=1000).
    pub limit: u32,
}

impl Store {
    /// Stores a pending job unless the certificate already has an active one.
    pub async fn enqueue(&self, new_job: &Job) -> Result<EnqueueOutcome, StoreError> {
        if insert_jobs(&self.write, &[new_job]).await? == 1 {
            return Ok(EnqueueOutcome::Created(new_job.clone()));
        }
        let existing = self
            .active_job(new_job.certificate_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(EnqueueOutcome::AlreadyActive(existing))
    }

    /// The pending or running job of a certificate, if any.
    pub async fn active_job(&self, certificate_id: CertificateId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(sql!("SELECT {JOB_COLUMNS} FROM jobs WHERE active_key = $1"))
            .bind(certificate_id.to_string())
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(job).transpose()
    }

    /// Claims up to `limit` runnable jobs for `owner`: pending ones whose time has come, and
    /// running ones whose lease expired (their worker died). One statement, so two claimers
    /// never get the same job.
    pub async fn claim_jobs(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1, \
             updated_at = $3 WHERE id IN (SELECT id FROM jobs WHERE (state = 'pending' AND run_after <= $3) \
             OR (state = 'running' AND lease_until < $3) ORDER BY run_after, id LIMIT $4{}) RETURNING {JOB_COLUMNS}",
            self.backend.skip_locked()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(to_ms(now + lease))
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.write)
            .await?;
        rows.iter()
            .map(|row| {
                let job = job(row)?;
                Ok(ClaimedJob {
                    attempt: job.attempts,
                    job,
                })
            })
            .collect()
    }

    /// Puts back every job `owner` was running (a restarted node recovering its own work at
    /// once instead of waiting for the leases to expire). Returns how many.
    pub async fn release_jobs_of(&self, owner: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE state = 'running' AND lease_owner = $1",
        )
        .bind(owner)
        .bind(to_ms(now))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected())
    }

    /// Records a failed attempt: back to pending until `retry_at`, or failed for good when
    /// `retry_at` is `None`. Also records the error on the certificate, and marks a certificate
    /// whose first issuance failed for good as failed. Returns false if the claim was stale.
    pub async fn fail_job(
        &self,
        owner: &str,
        claimed: &ClaimedJob,
        error: &str,
        problem: Option<&str>,
        retry_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let res = match retry_at {
            Some(retry_at) => sqlx::query(
                "UPDATE jobs SET state = 'pending', run_after = $1, lease_owner = NULL, lease_until = NULL, \
                 last_error = $2, updated_at = $3, problem = $7 WHERE id = $4 AND state = 'running' \
                 AND lease_owner = $5 AND attempts = $6",
            )
            .bind(to_ms(retry_at)),
            None => sqlx::query(
                "UPDATE jobs SET state = 'failed', active_key = NULL, lease_owner = NULL, lease_until = NULL, \
                 last_error = $1, updated_at = $2, finished_at = $2, problem = $6 WHERE id = $3 \
                 AND state = 'running' AND lease_owner = $4 AND attempts = $5",
            ),
        }
        .bind(error)
        .bind(to_ms(now))
        .bind(claimed.job.id.to_string())
        .bind(owner)
        .bind(i64::from(claimed.attempt))
        .bind(problem)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        // One notice per job for a first issuance; for a renewal one per version and day of
        // failing, so retries and re-enqueued jobs of the same outage are not reported again.
        let certificate_id = claimed.job.certificate_id;
        let current: Option<(i64, Option<i64>)> =
            sqlx::query_as("SELECT current_version, renew_at FROM certificates WHERE id = $1")
                .bind(certificate_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((version, renew_at)) = current {
            let (kind, dedup_key) = match (claimed.job.kind, renew_at) {
                (JobKind::Renew, Some(renew_at)) => (
                    EventKind::RenewalFailed,
                    format!(
                        "renewal_failed:{certificate_id}:{version}:{}",
                        renewal_failure_period(from_ms(renew_at)?, now)
                    ),
                ),
                (JobKind::Renew, None) => (EventKind::RenewalFailed, format!("failed:{}", claimed.job.id)),
                (JobKind::Issue | JobKind::Deploy, _) => {
                    (EventKind::IssuanceFailed, format!("failed:{}", claimed.job.id))
                }
            };
            let problem_json = problem.and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
            let event = NewEvent {
                kind,
                dedup_key: Some(dedup_key),
                certificate_id: Some(certificate_id),
                subject: None,
                payload: serde_json::json!({
                    "version": version,
                    "job_id": claimed.job.id.to_string(),
                    "attempt": claimed.attempt,
                    "error": error,
                    "problem": problem_json,
                    "will_retry_at": retry_at.map(rfc3339),
                }),
                at: now,
            };
            insert_events(&mut tx, &[event]).await?;
        }
        let status_if_final = if retry_at.is_none() {
            CertificateStatus::Failed.as_str()
        } else {
            CertificateStatus::Pending.as_str()
        };
        sqlx::query(
            "UPDATE certificates SET last_error = $1, updated_at = $2, \
             status = CASE WHEN status = 'pending' THEN $3 ELSE status END WHERE id = $4",
        )
        .bind(error)
        .bind(to_ms(now))
        .bind(status_if_final)
        .bind(claimed.job.certificate_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Puts a claimed job back to pending until `run_after` without counting the attempt (it
    /// never reached the CA: an identifier is backing off). Returns false if the claim was stale.
    pub async fn defer_job(
        &self,
        owner: &str,
        claimed: &ClaimedJob,
        reason: &str,
        run_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE jobs SET state = 'pending', run_after = $1, lease_owner = NULL, lease_until = NULL, \
             attempts = attempts - 1, last_error = $2, updated_at = $3 WHERE id = $4 AND state = 'running' \
             AND lease_owner = $5 AND attempts = $6",
        )
        .bind(to_ms(run_after))
        .bind(reason)
        .bind(to_ms(now))
        .bind(claimed.job.id.to_string())
        .bind(owner)
        .bind(i64::from(claimed.attempt))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Extends the lease of a claimed job that is still at work (a long ACME order), so no
    /// other worker takes it over. Returns false if the claim was lost.
    pub async fn extend_lease(
        &self,
        owner: &str,
        claimed: &ClaimedJob,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND state = 'running' AND lease_owner = $3 \
             AND attempts = $4",
        )
        .bind(to_ms(lease_until))
        .bind(claimed.job.id.to_string())
        .bind(owner)
        .bind(i64::from(claimed.attempt))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records the ACME order a job has placed, if `owner` still holds the job in this attempt:
    /// `false` means the job was taken over and the order must not go on.
    pub async fn record_acme_order(
        &self,
        owner: &str,
        claimed: &ClaimedJob,
        order: &RecordedOrder,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let key = self.seal(
            "acme_orders.private_key_pem",
            &claimed.job.id.to_string(),
            order.private_key_pem.as_deref(),
        )?;
        let res = sqlx::query(
            "INSERT INTO acme_orders (job_id, order_url, csr_pem, private_key_pem, created_at) \
             SELECT id, $1, $2, $3, $4 FROM jobs \
             WHERE id = $5 AND state = 'running' AND lease_owner = $6 AND attempts = $7 \
             ON CONFLICT (job_id) DO UPDATE SET order_url = excluded.order_url, csr_pem = excluded.csr_pem, \
             private_key_pem = excluded.private_key_pem, created_at = excluded.created_at",
        )
        .bind(&order.order_url)
        .bind(&order.csr_pem)
        .bind(key)
        .bind(to_ms(now))
        .bind(claimed.job.id.to_string())
        .bind(owner)
        .bind(i64::from(claimed.attempt))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The ACME order an earlier attempt of `job` placed, if any.
    pub async fn recorded_acme_order(&self, job: JobId) -> Result<Option<RecordedOrder>, StoreError> {
        let job_id = job.to_string();
        let row = sqlx::query("SELECT order_url, csr_pem, private_key_pem FROM acme_orders WHERE job_id = $1")
            .bind(&job_id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|row| {
            Ok(RecordedOrder {
                order_url: row.try_get("order_url")?,
                csr_pem: row.try_get("csr_pem")?,
                private_key_pem: self.open("acme_orders.private_key_pem", &job_id, row.try_get("private_key_pem")?)?,
            })
        })
        .transpose()
    }

    /// Forgets the recorded order of a job that is over.
    pub async fn forget_acme_order(&self, job: JobId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM acme_orders WHERE job_id = $1")
            .bind(job.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Publishes an http-01 answer for the other nodes until `expires_at`; answers left behind
    /// by crashed nodes are swept on the way.
    pub async fn put_http01(
        &self,
        token: &str,
        key_authorization: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM acme_http01 WHERE expires_at < $1")
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO acme_http01 (token, key_authorization, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (token) DO UPDATE SET key_authorization = excluded.key_authorization, \
             expires_at = excluded.expires_at",
        )
        .bind(token)
        .bind(key_authorization)
        .bind(to_ms(expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An http-01 answer some node published, if it has not expired.
    pub async fn http01(&self, token: &str, now: OffsetDateTime) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT key_authorization FROM acme_http01 WHERE token = $1 AND expires_at >= $2")
            .bind(token)
            .bind(to_ms(now))
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|row| row.try_get("key_authorization")).transpose()?)
    }

    /// Withdraws an http-01 answer.
    pub async fn remove_http01(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM acme_http01 WHERE token = $1")
            .bind(token)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The time before which no order for any of `identifiers` should be placed with `issuer`,
    /// if one of them is backing off after failures.
    pub async fn identifier_backoff(
        &self,
        issuer: &str,
        identifiers: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
        if identifiers.is_empty() {
            return Ok(None);
        }
        let placeholders: Vec<String> = (0..identifiers.len()).map(|i| format!("${}", i + 3)).collect();
        let statement = format!(
            "SELECT identifier, not_before FROM identifier_backoff WHERE issuer_id = $1 AND not_before > $2 \
             AND identifier IN ({}) ORDER BY not_before DESC LIMIT 1",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(issuer)
            .bind(to_ms(now));
        for identifier in identifiers {
            query = query.bind(identifier);
        }
        let row = query.fetch_optional(&self.read).await?;
        match row {
            Some(row) => Ok(Some((row.try_get("identifier")?, from_ms(row.try_get("not_before")?)?))),
            None => Ok(None),
        }
    }

    /// Counts one more failure for each identifier and sets its backoff: `delay(failures)` from
    /// now. Returns the largest failure count.
    pub async fn record_identifier_failures(
        &self,
        issuer: &str,
        identifiers: &[String],
        now: OffsetDateTime,
        delay: impl Fn(u32) -> Duration,
    ) -> Result<u32, StoreError> {
        let mut tx = self.write.begin().await?;
        let mut most = 0;
        for identifier in identifiers {
            let failures: Option<i64> =
                sqlx::query_scalar("SELECT failures FROM identifier_backoff WHERE issuer_id = $1 AND identifier = $2")
                    .bind(issuer)
                    .bind(identifier)
                    .fetch_optional(&mut *tx)
                    .await?;
            let failures = u32::try_from(failures.unwrap_or(0))
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            most = most.max(failures);
            sqlx::query(
                "INSERT INTO identifier_backoff (issuer_id, identifier, failures, not_before) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (issuer_id, identifier) DO UPDATE SET failures = excluded.failures, \
                 not_before = excluded.not_before",
            )
            .bind(issuer)
            .bind(identifier)
            .bind(i64::from(failures))
            .bind(to_ms(now + delay(failures)))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(most)
    }

    /// Forgets the failures of `identifiers` after a success.
    pub async fn clear_identifier_backoff(&self, issuer: &str, identifiers: &[String]) -> Result<(), StoreError> {
        for identifier in identifiers {
            sqlx::query("DELETE FROM identifier_backoff WHERE issuer_id = $1 AND identifier = $2")
                .bind(issuer)
                .bind(identifier)
                .execute(&self.write)
                .await?;
        }
        Ok(())
    }

    /// Cancels a job that waits: queued, backing off after a failure, or waiting for an
    /// agent's CSR (all `pending`). A running job is refused with `Conflict` (its worker holds
    /// the lease and commits or fails it within the lease), and so is a finished one. The
    /// order an earlier attempt recorded is forgotten with it.
    pub async fn cancel_job(&self, id: JobId, reason: &str, now: OffsetDateTime) -> Result<Job, StoreError> {
        let mut tx = self.write.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', active_key = NULL, lease_owner = NULL, lease_until = NULL, \
             last_error = $1, updated_at = $2, finished_at = $2 WHERE id = $3 AND state = 'pending'",
        )
        .bind(reason)
        .bind(to_ms(now))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if cancelled.rows_affected() == 0 {
            let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match state {
                None => StoreError::NotFound,
                Some(state) => StoreError::Conflict(format!("the job is {state}, only a pending job can be cancelled")),
            });
        }
        sqlx::query("DELETE FROM acme_orders WHERE job_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(sql!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let cancelled = job(&row)?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// One job.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(sql!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(job).transpose()
    }

    /// A page of jobs; ask for `limit` and get up to `limit` plus whether more exist.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<(Vec<Job>, bool), StoreError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(state) = filter.state {
            binds.push(state.as_str().to_owned());
            sql.push_str(&format!(" AND state = ${}", binds.len()));
        }
        if let Some(certificate_id) = filter.certificate_id {
            binds.push(certificate_id.to_string());
            sql.push_str(&format!(" AND certificate_id = ${}", binds.len()));
        }
        if let Some(cursor) = filter.cursor {
            binds.push(cursor.to_string());
            sql.push_str(&format!(" AND id > ${}", binds.len()));
        }
        let limit = filter.limit.clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in &binds {
            query = query.bind(bind);
        }
        let rows = query.fetch_all(&self.read).await?;
        let mut jobs = rows.iter().map(job).collect::<Result<Vec<_>, _>>()?;
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        Ok((jobs, more))
    }

    /// How many jobs are in each state.
    /// Since when the longest-waiting runnable job has waited (its `run_after`), if any waits.
    pub async fn oldest_runnable_job(&self, now: OffsetDateTime) -> Result<Option<OffsetDateTime>, StoreError> {
        let row = sqlx::query("SELECT MIN(run_after) AS oldest FROM jobs WHERE state = 'pending' AND run_after <= $1")
            .bind(to_ms(now))
            .fetch_one(&self.read)
            .await?;
        row.try_get::<Option<i64>, _>("oldest")?.map(from_ms).transpose()
    }

    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state ORDER BY state")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
            .collect()
    }
}

/// Inserts jobs; a job whose certificate already has an active one is skipped. Returns how
/// many were inserted.
pub(crate) async fn insert_jobs<'e, E>(executor: E, new_jobs: &[&Job]) -> Result<u64, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    const COLUMNS: usize = 12;
    let mut values: Vec<SqlValue> = Vec::with_capacity(new_jobs.len() * COLUMNS);
    for job in new_jobs {
        let active_key = if job.state.is_terminal() {
            None
        } else {
            Some(job.certificate_id.to_string())
        };
        values.extend([
            job.id.to_string().into(),
            job.kind.as_str().into(),
            job.certificate_id.to_string().into(),
            job.state.as_str().into(),
            i64::from(job.attempts).into(),
            i64::from(job.max_attempts).into(),
            to_ms(job.run_after).into(),
            job.last_error.clone().into(),
            active_key.into(),
            to_ms(job.created_at).into(),
            to_ms(job.updated_at).into(),
            job.finished_at.map(to_ms).into(),
        ]);
    }
    let statement = sql!(
        "INSERT INTO jobs (id, kind, certificate_id, state, attempts, max_attempts, run_after, last_error, active_key, \
         created_at, updated_at, finished_at) VALUES {} ON CONFLICT (active_key) DO NOTHING",
        values_list(new_jobs.len(), COLUMNS, 0)
    );
    let res = bind_all(sqlx::query(statement), values).execute(executor).await?;
    Ok(res.rows_affected())
}
