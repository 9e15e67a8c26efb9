//! Managed certificates and their versions.

use std::collections::{HashMap, HashSet};

use ck_domain::{
    Certificate, CertificateId, CertificateStatus, CertificateVersion, EventKind, ExpiryThresholds, IssuerId, Job,
    JobKind, RenewalTrigger, RevocationReason, RevocationScope,
};
use sqlx::Row;
use time::{Duration, OffsetDateTime};

use crate::audit::insert_audit;
use crate::jobs::insert_jobs;
use crate::notifications::{NewEvent, insert_events, rfc3339};
use crate::rows::{
    CERTIFICATE_COLUMNS, ROWS_PER_STATEMENT, SqlValue, VERSION_COLUMNS, bind_all, certificate, from_ms, labels_json,
    sans_json, to_ms, values_list, version,
};
use crate::{AuditRecord, ClaimedJob, Store, StoreError};

/// A certificate's expiry and renewal time (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateTimes {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Issuer id.
    pub issuer: String,
    /// Expiry of the current version, once issued.
    pub not_after: Option<OffsetDateTime>,
    /// When renewal is due.
    pub renew_at: Option<OffsetDateTime>,
}

/// The order of a certificate list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertificateOrder {
    /// By id: creation order (the only order the cursor works with).
    #[default]
    Created,
    /// By name, then id.
    Name,
    /// Soonest expiry first (not issued yet: last), then id.
    Expiry,
}

/// Filters for listing certificates. Results are ordered by `order` (by id by default).
#[derive(Debug, Clone, Default)]
pub struct CertificateFilter {
    /// Only certificates whose name, common name or a SAN contains this text (any case).
    pub search: Option<String>,
    /// The order.
    pub order: CertificateOrder,
    /// Skip this many (pages of a sorted list; with the default order prefer `cursor`).
    pub offset: u32,
    /// Only this status (`expired` means active but past `not_after`).
    pub status: Option<CertificateStatus>,
    /// Only this issuer.
    pub issuer_id: Option<IssuerId>,
    /// Only certificates whose current version expires before this.
    pub expiring_before: Option<OffsetDateTime>,
    /// Only certificates after this id.
    pub cursor: Option<CertificateId>,
    /// At most this many (1..=1000).
    pub limit: u32,
}

/// One page of certificates.
#[derive(Debug, Clone)]
pub struct CertificatePage {
    /// The certificates.
    pub items: Vec<Certificate>,
    /// Whether more follow the last one.
    pub more: bool,
}

/// A newly signed version, ready to store.
#[derive(Clone, PartialEq, Eq)]
pub struct NewVersion {
    /// Hex serial.
    pub serial: String,
    /// Hex SHA-256 of the DER.
    pub fingerprint: String,
    /// The leaf.
    pub cert_pem: String,
    /// Leaf and intermediates.
    pub chain_pem: String,
    /// The CSR it was signed from.
    pub csr_pem: String,
    /// The server-generated key, in server-key mode.
    pub private_key_pem: Option<String>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for NewVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewVersion")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A successful job, to record atomically with its new version.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The claim being completed (fencing).
    pub claimed: ClaimedJob,
    /// What was issued.
    pub version: NewVersion,
    /// When the scheduler should renew it.
    pub renew_at: OffsetDateTime,
}

impl Store {
    /// Stores a new certificate and its first job in one transaction.
    pub async fn create_certificate(&self, cert: &Certificate, first_job: &Job) -> Result<(), StoreError> {
        self.create_certificates(&[(cert, first_job)]).await
    }

    /// Stores new certificates with their first jobs, all in one transaction with multi-row
    /// inserts: the group commit of concurrent create requests.
    pub async fn create_certificates(&self, new: &[(&Certificate, &Job)]) -> Result<(), StoreError> {
        const COLUMNS: usize = 20;
        let mut tx = self.write.begin().await?;
        for chunk in new.chunks(ROWS_PER_STATEMENT) {
            let mut values: Vec<SqlValue> = Vec::with_capacity(chunk.len() * COLUMNS);
            for (cert, _) in chunk {
                let (renew_fraction, renew_days) = match cert.renewal_policy.trigger() {
                    RenewalTrigger::LifetimeFraction(fraction) => (Some(fraction), None),
                    RenewalTrigger::DaysBeforeExpiry(days) => (None, Some(i64::from(days))),
                };
                values.extend([
                    cert.id.to_string().into(),
                    cert.name.as_str().into(),
                    cert.common_name.as_str().into(),
                    sans_json(&cert.sans).into(),
                    cert.issuer_id.as_str().into(),
                    cert.key_type.as_str().into(),
                    cert.key_source.as_str().into(),
                    cert.csr_pem.clone().into(),
                    cert.challenge.clone().into(),
                    cert.agent_id.clone().into(),
                    cert.status.as_str().into(),
                    cert.validity.whole_days().into(),
                    renew_fraction.into(),
                    renew_days.into(),
                    cert.renewal_policy.jitter_fraction().into(),
                    labels_json(&cert.labels).into(),
                    cert.expiry_thresholds.as_ref().map(ExpiryThresholds::to_text).into(),
                    i64::from(cert.client_auth).into(),
                    to_ms(cert.created_at).into(),
                    to_ms(cert.updated_at).into(),
                ]);
            }
            let statement = sql!(
                "INSERT INTO certificates (id, name, common_name, sans, issuer_id, key_type, key_source, csr_pem, \
                 challenge, agent_id, status, validity_days, renew_fraction, renew_days, renew_jitter, labels, expiry_thresholds, client_auth, \
                 created_at, updated_at) VALUES {}",
                values_list(chunk.len(), COLUMNS, 0)
            );
            bind_all(sqlx::query(statement), values).execute(&mut *tx).await?;
            let jobs: Vec<&Job> = chunk.iter().map(|(_, job)| *job).collect();
            if insert_jobs(&mut *tx, &jobs).await? != jobs.len() as u64 {
                return Err(StoreError::Conflict(
                    "a certificate already has an active job".to_owned(),
                ));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Several certificates by id, in no particular order; missing ids are left out.
    pub async fn certificates_by_ids(&self, ids: &[CertificateId]) -> Result<Vec<Certificate>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let statement = sql!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE id IN ({})",
                placeholders.join(", ")
            );
            let values = chunk.iter().map(|id| SqlValue::from(id.to_string())).collect();
            let rows = bind_all(sqlx::query(statement), values).fetch_all(&self.read).await?;
            for row in &rows {
                found.push(certificate(row)?);
            }
        }
        Ok(found)
    }

    /// One certificate.
    pub async fn certificate(&self, id: CertificateId) -> Result<Option<Certificate>, StoreError> {
        let row = sqlx::query(sql!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(certificate).transpose()
    }

    /// A page of certificates.
    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> Result<CertificatePage, StoreError> {
        let (conditions, mut binds) = certificate_conditions(filter, now);
        let mut sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates{conditions}");
        if let Some(cursor) = filter.cursor {
            binds.push(SqlValue::from(cursor.to_string()));
            sql.push_str(&format!(" AND id > ${}", binds.len()));
        }
        let limit = filter.limit.clamp(1, 1000);
        let order = match filter.order {
            CertificateOrder::Created => "id",
            CertificateOrder::Name => "name, id",
            // Not issued yet (no expiry) sorts last on both engines.
            CertificateOrder::Expiry => "CASE WHEN not_after IS NULL THEN 1 ELSE 0 END, not_after, id",
        };
        sql.push_str(&format!(
            " ORDER BY {order} LIMIT {} OFFSET {}",
            limit + 1,
            filter.offset
        ));
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.read)
            .await?;
        let mut items = rows.iter().map(certificate).collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(CertificatePage { items, more })
    }

    /// How many certificates match `filter` (its cursor, order, offset and limit aside).
    pub async fn count_certificates(&self, filter: &CertificateFilter, now: OffsetDateTime) -> Result<u64, StoreError> {
        let (conditions, binds) = certificate_conditions(filter, now);
        let sql = format!("SELECT COUNT(*) AS n FROM certificates{conditions}");
        let row = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_one(&self.read)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    /// Every version of a certificate, oldest first.
    pub async fn versions(&self, id: CertificateId) -> Result<Vec<CertificateVersion>, StoreError> {
        let rows = sqlx::query(sql!(
            "SELECT {VERSION_COLUMNS} FROM certificate_versions WHERE certificate_id = $1 ORDER BY version"
        ))
        .bind(id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(version).collect()
    }

    /// One version with its server-held private key, if the server generated it.
    pub async fn version_with_key(
        &self,
        id: CertificateId,
        number: u32,
    ) -> Result<Option<(CertificateVersion, Option<String>)>, StoreError> {
        let row = sqlx::query(sql!(
            "SELECT {VERSION_COLUMNS}, private_key_pem FROM certificate_versions \
             WHERE certificate_id = $1 AND version = $2"
        ))
        .bind(id.to_string())
        .bind(i64::from(number))
        .fetch_optional(&self.read)
        .await?;
        match row {
            Some(row) => Ok(Some((
                version(&row)?,
                self.open(
                    "certificate_versions.private_key_pem",
                    &crate::secrets::row_id(&id.to_string(), Some(&number.to_string())),
                    row.try_get("private_key_pem")?,
                )?,
            ))),
            None => Ok(None),
        }
    }

    /// Revokes the versions of a certificate that `scope` covers: each one's serial goes on
    /// the CRL (the `revocations` table) and its OCSP status turns to revoked. When the current
    /// version is among them the certificate stops being managed: it is marked revoked and its
    /// active jobs are cancelled (a later renewal issues a fresh version and makes it active
    /// again). Returns the certificate and the version numbers revoked, oldest first.
    pub async fn revoke_certificate(
        &self,
        id: CertificateId,
        reason: RevocationReason,
        scope: RevocationScope,
        now: OffsetDateTime,
    ) -> Result<(Certificate, Vec<u32>), StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query("SELECT status, current_version FROM certificates WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let status: String = row.try_get("status")?;
        let current = u32::try_from(row.try_get::<i64, _>("current_version")?).unwrap_or(0);
        let targets: Vec<u32> = match scope {
            RevocationScope::Unexpired => sqlx::query_scalar::<_, i64>(
                "SELECT version FROM certificate_versions WHERE certificate_id = $1 AND revoked_at IS NULL \
                 AND (not_after > $2 OR version = $3) ORDER BY version",
            )
            .bind(id.to_string())
            .bind(to_ms(now))
            .bind(i64::from(current))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .filter_map(|v| u32::try_from(v).ok())
            .collect(),
            RevocationScope::Version(number) => {
                let revoked: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT revoked_at FROM certificate_versions WHERE certificate_id = $1 AND version = $2",
                )
                .bind(id.to_string())
                .bind(i64::from(number))
                .fetch_optional(&mut *tx)
                .await?;
                match revoked {
                    None => return Err(StoreError::NotFound),
                    Some(Some(_)) => {
                        return Err(StoreError::Conflict(format!("version {number} is revoked already")));
                    }
                    Some(None) => vec![number],
                }
            }
        };
        let revokes_current =
            targets.contains(&current) && matches!(status.as_str(), "active" | "expiring" | "expired");
        if targets.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the certificate is {status}, with no version left to revoke"
            )));
        }
        for version in &targets {
            sqlx::query(
                "INSERT INTO revocations (issuer_id, serial, revoked_at, reason, not_after) \
                 SELECT c.issuer_id, v.serial, $1, $2, v.not_after FROM certificate_versions v \
                 JOIN certificates c ON c.id = v.certificate_id WHERE v.certificate_id = $3 AND v.version = $4 \
                 ON CONFLICT (issuer_id, serial) DO NOTHING",
            )
            .bind(to_ms(now))
            .bind(reason.as_str())
            .bind(id.to_string())
            .bind(i64::from(*version))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE certificate_versions SET revoked_at = $1, revocation_reason = $2 WHERE certificate_id = $3 \
                 AND version = $4",
            )
            .bind(to_ms(now))
            .bind(reason.as_str())
            .bind(id.to_string())
            .bind(i64::from(*version))
            .execute(&mut *tx)
            .await?;
        }
        if revokes_current {
            sqlx::query(
                "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2, renew_at = NULL, \
                 updated_at = $1 WHERE id = $3",
            )
            .bind(to_ms(now))
            .bind(reason.as_str())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
            cancel_active_jobs(&mut tx, id, now).await?;
        }
        let row = sqlx::query(sql!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let revoked = certificate(&row)?;
        let mut serials = Vec::with_capacity(targets.len());
        for version in &targets {
            let serial: String = sqlx::query_scalar(
                "SELECT serial FROM certificate_versions WHERE certificate_id = $1 AND version = $2",
            )
            .bind(id.to_string())
            .bind(i64::from(*version))
            .fetch_one(&mut *tx)
            .await?;
            serials.push(serial);
        }
        let newest = targets.last().copied().unwrap_or(current);
        let listed: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let event = NewEvent {
            kind: EventKind::Revoked,
            dedup_key: Some(format!("revoked:{id}:{}", listed.join(","))),
            certificate_id: Some(id),
            subject: None,
            payload: serde_json::json!({
                "version": newest,
                "serial": serials.last(),
                "reason": reason.as_str(),
                "versions": targets,
                "serials": serials,
            }),
            at: now,
        };
        insert_events(&mut tx, &[event]).await?;
        tx.commit().await?;
        Ok((revoked, targets))
    }

    /// Deletes a certificate with its versions and jobs (revoked serials stay on the CRL).
    /// Returns false if it did not exist. Unless `keep_valid`, a certificate with a version
    /// still valid at `now` (not expired, not revoked) is refused with `Conflict`: deleting it
    /// would leave a certificate that clients trust and nobody tracks.
    pub async fn delete_certificate(
        &self,
        id: CertificateId,
        keep_valid: bool,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        if !keep_valid {
            let valid: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM certificate_versions WHERE certificate_id = $1 AND revoked_at IS NULL \
                 AND not_after > $2",
            )
            .bind(id.to_string())
            .bind(to_ms(now))
            .fetch_one(&mut *tx)
            .await?;
            if valid > 0 {
                return Err(StoreError::Conflict(format!(
                    "{valid} of its versions are still valid (not expired, not revoked)"
                )));
            }
        }
        sqlx::query("DELETE FROM jobs WHERE certificate_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM certificate_versions WHERE certificate_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let res = sqlx::query("DELETE FROM certificates WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records successful jobs and their new versions, all in one transaction of three
    /// multi-row statements per chunk: fenced job updates, certificate updates, version inserts.
    /// Batching keeps SQLite's single writer from becoming the bottleneck. A completion whose
    /// claim is stale is skipped. Returns, per completion, the version number stored or `None`.
    pub async fn complete_jobs(
        &self,
        owner: &str,
        completions: &[Completion],
        now: OffsetDateTime,
    ) -> Result<Vec<Option<u32>>, StoreError> {
        let mut tx = self.write.begin().await?;
        let mut stored = vec![None; completions.len()];
        for (chunk_idx, chunk) in completions.chunks(ROWS_PER_STATEMENT).enumerate() {
            let chunk_start = chunk_idx * ROWS_PER_STATEMENT;
            // The fenced job update comes first: it takes SQLite's write lock at once and, on
            // PostgreSQL, the row locks, so nothing below can race another worker.
            let mut values: Vec<SqlValue> = vec![to_ms(now).into(), owner.into()];
            for completion in chunk {
                values.push(completion.claimed.job.id.to_string().into());
                values.push(i64::from(completion.claimed.attempt).into());
            }
            let statement = sql!(
                "UPDATE jobs SET state = 'succeeded', active_key = NULL, lease_owner = NULL, lease_until = NULL, \
                 last_error = NULL, updated_at = $1, finished_at = $1 FROM (VALUES {}) AS claimed \
                 WHERE jobs.id = claimed.column1 AND jobs.attempts = claimed.column2 AND jobs.state = 'running' \
                 AND jobs.lease_owner = $2 RETURNING id",
                values_list(chunk.len(), 2, 2)
            );
            let rows = bind_all(sqlx::query(statement), values).fetch_all(&mut *tx).await?;
            let fenced = rows
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<HashSet<_>, _>>()?;
            // Indices into `completions` of the claims that are still this worker's.
            let current: Vec<usize> = (chunk_start..chunk_start + chunk.len())
                .filter(|idx| fenced.contains(&completions[*idx].claimed.job.id.to_string()))
                .collect();
            if current.is_empty() {
                continue;
            }

            let mut values: Vec<SqlValue> = vec![to_ms(now).into()];
            for idx in &current {
                let completion = &completions[*idx];
                let new = &completion.version;
                values.extend([
                    completion.claimed.job.certificate_id.to_string().into(),
                    new.serial.as_str().into(),
                    new.fingerprint.as_str().into(),
                    to_ms(new.not_before).into(),
                    to_ms(new.not_after).into(),
                    to_ms(completion.renew_at).into(),
                ]);
            }
            let statement = sql!(
                "UPDATE certificates SET current_version = current_version + 1, status = 'active', alerted_days = NULL, \
                 serial = issued.column2, fingerprint = issued.column3, not_before = issued.column4, \
                 not_after = issued.column5, renew_at = issued.column6, last_error = NULL, revoked_at = NULL, \
                 revocation_reason = NULL, updated_at = $1, \
                 csr_pem = CASE WHEN key_source = 'agent' THEN NULL ELSE csr_pem END FROM (VALUES {}) AS issued \
                 WHERE certificates.id = issued.column1 RETURNING id, current_version",
                values_list(current.len(), 6, 1)
            );
            let rows = bind_all(sqlx::query(statement), values).fetch_all(&mut *tx).await?;
            let mut numbers: HashMap<String, i64> = HashMap::with_capacity(rows.len());
            for row in &rows {
                numbers.insert(row.try_get("id")?, row.try_get("current_version")?);
            }

            const COLUMNS: usize = 12;
            let mut values: Vec<SqlValue> = Vec::with_capacity(current.len() * COLUMNS);
            let mut n_rows = 0;
            let mut events = Vec::with_capacity(current.len());
            let mut notices = Vec::with_capacity(current.len());
            for idx in &current {
                let completion = &completions[*idx];
                let certificate_id = completion.claimed.job.certificate_id.to_string();
                // A certificate deleted since the claim has no row to update: nothing to store.
                let Some(&number) = numbers.get(&certificate_id) else {
                    continue;
                };
                let new = &completion.version;
                values.extend([
                    certificate_id.as_str().into(),
                    number.into(),
                    new.serial.as_str().into(),
                    new.fingerprint.as_str().into(),
                    new.cert_pem.as_str().into(),
                    new.chain_pem.as_str().into(),
                    new.csr_pem.as_str().into(),
                    self.seal(
                        "certificate_versions.private_key_pem",
                        &crate::secrets::row_id(&certificate_id, Some(&number.to_string())),
                        new.private_key_pem.as_deref(),
                    )?
                    .into(),
                    to_ms(new.not_before).into(),
                    to_ms(new.not_after).into(),
                    completion.claimed.job.id.to_string().into(),
                    to_ms(now).into(),
                ]);
                n_rows += 1;
                stored[*idx] = u32::try_from(number).ok();
                let (action, kind) = match completion.claimed.job.kind {
                    JobKind::Renew => ("certificate.renewed", EventKind::Renewed),
                    JobKind::Issue | JobKind::Deploy => ("certificate.issued", EventKind::Issued),
                };
                notices.push(NewEvent {
                    kind,
                    dedup_key: Some(format!("version:{certificate_id}:{number}")),
                    certificate_id: Some(completion.claimed.job.certificate_id),
                    subject: None,
                    payload: serde_json::json!({
                        "version": number,
                        "serial": new.serial,
                        "not_before": rfc3339(new.not_before),
                        "not_after": rfc3339(new.not_after),
                        "renew_at": rfc3339(completion.renew_at),
                        "job_id": completion.claimed.job.id.to_string(),
                    }),
                    at: now,
                });
                events.push(AuditRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    at: now,
                    actor: "system".to_owned(),
                    action: action.to_owned(),
                    resource: Some(format!("certificates/{certificate_id}")),
                    request_id: None,
                    outcome: "success".to_owned(),
                    status: None,
                    client: None,
                    body_sha256: None,
                    detail: Some(format!("version {number}, serial {}", new.serial)),
                });
            }
            if n_rows == 0 {
                continue;
            }
            let statement = sql!(
                "INSERT INTO certificate_versions (certificate_id, version, serial, fingerprint, cert_pem, chain_pem, \
                 csr_pem, private_key_pem, not_before, not_after, job_id, created_at) VALUES {}",
                values_list(n_rows, COLUMNS, 0)
            );
            bind_all(sqlx::query(statement), values).execute(&mut *tx).await?;
            // The version and its audit record commit together: no issuance goes unrecorded.
            insert_audit(&mut tx, &events).await?;
            insert_events(&mut tx, &notices).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Certificates in use (active, expiring, expired) whose renewal time has come, with no
    /// active job and no job that failed for good within `failed_cooldown`.
    pub async fn due_for_renewal(
        &self,
        now: OffsetDateTime,
        failed_cooldown: Duration,
        limit: u32,
    ) -> Result<Vec<CertificateId>, StoreError> {
        // A renewal job that used all its attempts cools the certificate down before the next
        // job, or a CA outage would get a fresh round of attempts from every scan.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM certificates WHERE status IN ('active', 'expiring', 'expired') AND renew_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.active_key = certificates.id) \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.certificate_id = certificates.id \
             AND jobs.state = 'failed' AND jobs.finished_at > $3) ORDER BY renew_at LIMIT $2",
        )
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .bind(to_ms(now - failed_cooldown))
        .fetch_all(&self.read)
        .await?;
        ids.iter()
            .map(|id| id.parse().map_err(|e| StoreError::Corrupt(format!("id: {e}"))))
            .collect()
    }

    /// Expiries per day for `days` days from `start` (a midnight): the count of certificates in
    /// use whose current version expires on each day, for the dashboard's heatmap.
    pub async fn expiries_per_day(&self, start: OffsetDateTime, days: u32) -> Result<Vec<u64>, StoreError> {
        const DAY_MS: i64 = 86_400_000;
        let rows = sqlx::query(
            "SELECT (not_after - $1) / $3 AS day, COUNT(*) AS n FROM certificates \
             WHERE status <> 'revoked' AND not_after >= $1 AND not_after < $2 GROUP BY (not_after - $1) / $3",
        )
        .bind(to_ms(start))
        .bind(to_ms(start) + DAY_MS * i64::from(days))
        .bind(DAY_MS)
        .fetch_all(&self.read)
        .await?;
        let mut counts = vec![0u64; days as usize];
        for row in &rows {
            let day: i64 = row.try_get("day")?;
            let n: i64 = row.try_get("n")?;
            if let Some(slot) = usize::try_from(day).ok().and_then(|d| counts.get_mut(d)) {
                *slot = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    /// How many certificates are in each stored status.
    pub async fn certificate_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, issuer_id, COUNT(*) AS n FROM certificates GROUP BY status, issuer_id \
             ORDER BY status, issuer_id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("status")?, row.try_get("issuer_id")?, row.try_get("n")?)))
            .collect()
    }

    /// Every certificate that is not revoked, with its expiry and renewal time, for the
    /// per-certificate metrics.
    pub async fn certificate_times(&self) -> Result<Vec<CertificateTimes>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, issuer_id, not_after, renew_at FROM certificates WHERE status <> 'revoked' ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CertificateTimes {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    issuer: row.try_get("issuer_id")?,
                    not_after: row.try_get::<Option<i64>, _>("not_after")?.map(from_ms).transpose()?,
                    renew_at: row.try_get::<Option<i64>, _>("renew_at")?.map(from_ms).transpose()?,
                })
            })
            .collect()
    }
}

async fn cancel_active_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: CertificateId,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE jobs SET state = 'cancelled', active_key = NULL, lease_owner = NULL, lease_until = NULL, \
         updated_at = $1, finished_at = $1 WHERE certificate_id = $2 AND state IN ('pending', 'running')",
    )
    .bind(to_ms(now))
    .bind(id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A revoked serial of an issuer, for its CRL and OCSP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial, hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
    /// The certificate's expiry.
    pub not_after: OffsetDateTime,
}

fn revocation(row: &sqlx::any::AnyRow) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        serial: row.try_get("serial")?,
        revoked_at: from_ms(row.try_get("revoked_at")?)?,
        reason: row
            .try_get::<String, _>("reason")?
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("revocation reason: {e}")))?,
        not_after: from_ms(row.try_get("not_after")?)?,
    })
}

impl Store {
    /// The issuer's revocations of certificates not yet expired at `now`, by serial.
    pub async fn revocations(&self, issuer_id: &str, now: OffsetDateTime) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, reason, not_after FROM revocations WHERE issuer_id = $1 AND not_after > $2 \
             ORDER BY serial",
        )
        .bind(issuer_id)
        .bind(to_ms(now))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(revocation).collect()
    }

    /// The next CRL number of an issuer (1, 2, …), never given out twice.
    pub async fn next_crl_number(&self, issuer_id: &str) -> Result<u64, StoreError> {
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO crl_numbers (issuer_id, number) VALUES ($1, 1) ON CONFLICT (issuer_id) \
             DO UPDATE SET number = crl_numbers.number + 1 RETURNING number",
        )
        .bind(issuer_id)
        .fetch_one(&self.write)
        .await?;
        u64::try_from(number).map_err(|_| StoreError::Corrupt(format!("CRL number {number}")))
    }
}

/// What the store knows about a serial of an issuer, for OCSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialStatus {
    /// Issued by this issuer and not revoked.
    Issued,
    /// Revoked.
    Revoked(Revocation),
    /// Never issued by this issuer (or deleted without revocation).
    Unknown,
}

impl Store {
    /// The status of `serial` (lowercase hex) among `issuer_id`'s certificates.
    pub async fn serial_status(&self, issuer_id: &str, serial: &str) -> Result<SerialStatus, StoreError> {
        let revoked = sqlx::query(
            "SELECT serial, revoked_at, reason, not_after FROM revocations WHERE issuer_id = $1 AND serial = $2",
        )
        .bind(issuer_id)
        .bind(serial)
        .fetch_optional(&self.read)
        .await?;
        if let Some(row) = revoked {
            return Ok(SerialStatus::Revoked(revocation(&row)?));
        }
        let issued: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM certificate_versions v JOIN certificates c ON c.id = v.certificate_id \
             WHERE v.serial = $1 AND c.issuer_id = $2",
        )
        .bind(serial)
        .bind(issuer_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(if issued.is_some() {
            SerialStatus::Issued
        } else {
            SerialStatus::Unknown
        })
    }
}

impl Store {
    /// Drops a certificate's stored CSR and with it server-side renewal (the device renews by
    /// enrolling again): a SCEP CSR carries the enrollment challenge, which must not stay
    /// readable in the inventory once the certificate is issued.
    pub async fn forget_csr(&self, id: CertificateId) -> Result<(), StoreError> {
        sqlx::query("UPDATE certificates SET csr_pem = NULL, renew_at = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

/// The `WHERE` clause of a certificate list (status, issuer, expiry, search) and its binds.
fn certificate_conditions(filter: &CertificateFilter, now: OffsetDateTime) -> (String, Vec<SqlValue>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut binds: Vec<SqlValue> = Vec::new();
    let mut push = |sql: &mut String, clause: &str, bind: SqlValue| {
        binds.push(bind);
        sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
    };
    match filter.status {
        Some(CertificateStatus::Active) => push(
            &mut sql,
            " AND status = 'active' AND not_after > $?",
            SqlValue::from(to_ms(now)),
        ),
        Some(CertificateStatus::Expiring) => push(
            &mut sql,
            " AND status = 'expiring' AND not_after > $?",
            SqlValue::from(to_ms(now)),
        ),
        Some(CertificateStatus::Expired) => push(
            &mut sql,
            " AND (status = 'expired' OR (status IN ('active', 'expiring') AND not_after <= $?))",
            SqlValue::from(to_ms(now)),
        ),
        Some(status) => push(&mut sql, " AND status = $?", SqlValue::from(status.as_str())),
        None => {}
    }
    if let Some(issuer_id) = &filter.issuer_id {
        push(&mut sql, " AND issuer_id = $?", SqlValue::from(issuer_id.to_string()));
    }
    if let Some(before) = filter.expiring_before {
        push(&mut sql, " AND not_after < $?", SqlValue::from(to_ms(before)));
    }
    if let Some(search) = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        // LIKE wildcards in the text are literal; LOWER on both sides because PostgreSQL's
        // LIKE is case-sensitive and SQLite's is not.
        let pattern = format!(
            "%{}%",
            search
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        // One bind for the three `$?`: `push` numbers them alike.
        push(
            &mut sql,
            " AND (LOWER(name) LIKE $? ESCAPE '\\' OR LOWER(common_name) LIKE $? ESCAPE '\\' \
                 OR LOWER(sans) LIKE $? ESCAPE '\\')",
            SqlValue::from(pattern),
        );
    }
    (sql, binds)
}
