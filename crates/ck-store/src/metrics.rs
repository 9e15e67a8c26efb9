//! The metrics' aggregate reads that name no certificate.

use sqlx::Row;
use time::OffsetDateTime;

use crate::rows::from_ms;
use crate::{Store, StoreError};

/// One issuer's earliest expiry and renewal time over its certificates that are not revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerTimes {
    /// Issuer id.
    pub issuer: String,
    /// The earliest expiry of a current version, once one is issued.
    pub not_after: Option<OffsetDateTime>,
    /// The earliest time a renewal is due.
    pub renew_at: Option<OffsetDateTime>,
}

impl Store {
    /// Per issuer, the earliest expiry and renewal time of its certificates that are not
    /// revoked: what the expiry alerts need without a series per certificate.
    pub async fn issuer_certificate_times(&self) -> Result<Vec<IssuerTimes>, StoreError> {
        let rows = sqlx::query(
            "SELECT issuer_id, MIN(not_after) AS not_after, MIN(renew_at) AS renew_at FROM certificates \
             WHERE status <> 'revoked' GROUP BY issuer_id ORDER BY issuer_id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(IssuerTimes {
                    issuer: row.try_get("issuer_id")?,
                    not_after: row.try_get::<Option<i64>, _>("not_after")?.map(from_ms).transpose()?,
                    renew_at: row.try_get::<Option<i64>, _>("renew_at")?.map(from_ms).transpose()?,
                })
            })
            .collect()
    }
}
