//! Managed certificates and their versions.

use ck_domain::{
    Certificate, CertificateId, CertificateStatus, CertificateVersion, IssuerId, Job, RenewalTrigger, RevocationReason,
};
use sqlx::Row;
use time::OffsetDateTime;

use crate::jobs::insert_job;
use crate::rows::{CERTIFICATE_COLUMNS, VERSION_COLUMNS, certificate, labels_json, sans_json, to_ms, version};
use crate::{ClaimedJob, Store, StoreError};

/// Filters for listing certificates. Results are ordered by id (creation time).
#[derive(Debug, Clone, Default)]
pub struct CertificateFilter {
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
        let mut tx = self.write.begin().await?;
        let (renew_fraction, renew_days) = match cert.renewal_policy.trigger() {
            RenewalTrigger::LifetimeFraction(fraction) => (Some(fraction), None),
            RenewalTrigger::DaysBeforeExpiry(days) => (None, Some(i64::from(days))),
        };
        sqlx::query(
            "INSERT INTO certificates (id, name, common_name, sans, issuer_id, key_type, key_source, csr_pem, status, \
             validity_days, renew_fraction, renew_days, renew_jitter, labels, current_version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, $15, $15)",
        )
        .bind(cert.id.to_string())
        .bind(&cert.name)
        .bind(&cert.common_name)
        .bind(sans_json(&cert.sans))
        .bind(cert.issuer_id.as_str())
        .bind(cert.key_type.as_str())
        .bind(cert.key_source.as_str())
        .bind(cert.csr_pem.clone())
        .bind(cert.status.as_str())
        .bind(cert.validity.whole_days())
        .bind(renew_fraction)
        .bind(renew_days)
        .bind(cert.renewal_policy.jitter_fraction())
        .bind(labels_json(&cert.labels))
        .bind(to_ms(cert.created_at))
        .execute(&mut *tx)
        .await?;
        if !insert_job(&mut *tx, first_job).await? {
            return Err(StoreError::Conflict(
                "the certificate already has an active job".to_owned(),
            ));
        }
        tx.commit().await?;
        Ok(())
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
        enum Bind {
            Text(String),
            Int(i64),
        }
        let mut sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, bind: Bind| {
            binds.push(bind);
            sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
        };
        match filter.status {
            Some(CertificateStatus::Active) => push(
                &mut sql,
                " AND status = 'active' AND not_after > $?",
                Bind::Int(to_ms(now)),
            ),
            Some(CertificateStatus::Expired) => push(
                &mut sql,
                " AND (status = 'expired' OR (status = 'active' AND not_after <= $?))",
                Bind::Int(to_ms(now)),
            ),
            Some(status) => push(&mut sql, " AND status = $?", Bind::Text(status.as_str().to_owned())),
            None => {}
        }
        if let Some(issuer_id) = &filter.issuer_id {
            push(&mut sql, " AND issuer_id = $?", Bind::Text(issuer_id.to_string()));
        }
        if let Some(before) = filter.expiring_before {
            push(&mut sql, " AND not_after < $?", Bind::Int(to_ms(before)));
        }
        if let Some(cursor) = filter.cursor {
            push(&mut sql, " AND id > $?", Bind::Text(cursor.to_string()));
        }
        let limit = filter.limit.clamp(1, 1000);
        sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(int) => query.bind(int),
            };
        }
        let rows = query.fetch_all(&self.read).await?;
        let mut items = rows.iter().map(certificate).collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok(CertificatePage { items, more })
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
            Some(row) => Ok(Some((version(&row)?, row.try_get("private_key_pem")?))),
            None => Ok(None),
        }
    }

    /// Revokes a certificate's current version and stops managing it: active jobs are
    /// cancelled. A later renewal issues a fresh version and makes it active again.
    pub async fn revoke_certificate(
        &self,
        id: CertificateId,
        reason: RevocationReason,
        now: OffsetDateTime,
    ) -> Result<Certificate, StoreError> {
        let mut tx = self.write.begin().await?;
        let res = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2, renew_at = NULL, \
             updated_at = $1 WHERE id = $3 AND status IN ('active', 'expired')",
        )
        .bind(to_ms(now))
        .bind(reason.as_str())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM certificates WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return match status {
                None => Err(StoreError::NotFound),
                Some(status) => Err(StoreError::Conflict(format!("the certificate is {status}, not active"))),
            };
        }
        sqlx::query(
            "UPDATE certificate_versions SET revoked_at = $1, revocation_reason = $2 WHERE certificate_id = $3 \
             AND version = (SELECT current_version FROM certificates WHERE id = $3)",
        )
        .bind(to_ms(now))
        .bind(reason.as_str())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        cancel_active_jobs(&mut tx, id, now).await?;
        let row = sqlx::query(sql!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE id = $1"))
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        certificate(&row)
    }

    /// Deletes a certificate with its versions and jobs. Returns false if it did not exist.
    pub async fn delete_certificate(&self, id: CertificateId) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
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

    /// Records successful jobs and their new versions, all in one transaction (one commit for a
    /// batch keeps SQLite's fsyncs off the critical path). A completion whose claim is stale is
    /// skipped. Returns, per completion, the version number stored or `None` if skipped.
    pub async fn complete_jobs(
        &self,
        owner: &str,
        completions: &[Completion],
        now: OffsetDateTime,
    ) -> Result<Vec<Option<u32>>, StoreError> {
        let mut tx = self.write.begin().await?;
        let mut stored = Vec::with_capacity(completions.len());
        for completion in completions {
            let claimed = &completion.claimed;
            // The fenced job update comes first: it takes SQLite's write lock at once and, on
            // PostgreSQL, the row lock, so nothing below can race another worker.
            let res = sqlx::query(
                "UPDATE jobs SET state = 'succeeded', active_key = NULL, lease_owner = NULL, lease_until = NULL, \
                 last_error = NULL, updated_at = $1, finished_at = $1 WHERE id = $2 AND state = 'running' \
                 AND lease_owner = $3 AND attempts = $4",
            )
            .bind(to_ms(now))
            .bind(claimed.job.id.to_string())
            .bind(owner)
            .bind(i64::from(claimed.attempt))
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                stored.push(None);
                continue;
            }
            let new = &completion.version;
            let number: i64 = sqlx::query_scalar(
                "UPDATE certificates SET current_version = current_version + 1, status = 'active', serial = $1, \
                 fingerprint = $2, not_before = $3, not_after = $4, renew_at = $5, last_error = NULL, \
                 revoked_at = NULL, revocation_reason = NULL, updated_at = $6 WHERE id = $7 RETURNING current_version",
            )
            .bind(&new.serial)
            .bind(&new.fingerprint)
            .bind(to_ms(new.not_before))
            .bind(to_ms(new.not_after))
            .bind(to_ms(completion.renew_at))
            .bind(to_ms(now))
            .bind(claimed.job.certificate_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO certificate_versions (certificate_id, version, serial, fingerprint, cert_pem, chain_pem, \
                 csr_pem, private_key_pem, not_before, not_after, job_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(claimed.job.certificate_id.to_string())
            .bind(number)
            .bind(&new.serial)
            .bind(&new.fingerprint)
            .bind(&new.cert_pem)
            .bind(&new.chain_pem)
            .bind(&new.csr_pem)
            .bind(new.private_key_pem.clone())
            .bind(to_ms(new.not_before))
            .bind(to_ms(new.not_after))
            .bind(claimed.job.id.to_string())
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await?;
            stored.push(u32::try_from(number).ok());
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Active certificates whose renewal time has come and that have no active job.
    pub async fn due_for_renewal(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<CertificateId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM certificates WHERE status = 'active' AND renew_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.active_key = certificates.id) ORDER BY renew_at LIMIT $2",
        )
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        ids.iter()
            .map(|id| id.parse().map_err(|e| StoreError::Corrupt(format!("id: {e}"))))
            .collect()
    }

    /// How many certificates are in each stored status.
    pub async fn certificate_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM certificates GROUP BY status ORDER BY status")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
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
