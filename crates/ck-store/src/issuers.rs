//! Issuers (with the local CA's material).

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use ck_domain::EventKind;

use crate::notifications::{NewEvent, insert_events};
use crate::rows::{from_ms, to_ms};
use crate::{Fence, Store, StoreError};

/// A stored issuer. For the local CA the PEM fields hold its certificates and keys.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerRecord {
    /// Issuer id (`local` for the built-in CA).
    pub id: String,
    /// `local` for now; ACME and others come later.
    pub kind: String,
    /// The root certificate.
    pub root_cert_pem: Option<String>,
    /// The root key.
    pub root_key_pem: Option<String>,
    /// The intermediate certificate.
    pub intermediate_cert_pem: Option<String>,
    /// The intermediate key.
    pub intermediate_key_pem: Option<String>,
    /// Settings JSON of non-local issuers (secrets included).
    pub settings: Option<String>,
    /// ACME account credentials JSON. Secret.
    pub account_credentials: Option<String>,
    /// ACME account URL.
    pub account_url: Option<String>,
    /// Last health check result.
    pub health: Option<IssuerHealth>,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// The result of an issuer health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerHealth {
    /// Whether the issuer answered and its account is valid.
    pub healthy: bool,
    /// What was found.
    pub detail: String,
    /// When.
    pub checked_at: OffsetDateTime,
}

impl std::fmt::Debug for IssuerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("IssuerRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Inserts an issuer unless one with the same id exists; returns whether it was inserted.
    /// Several nodes starting at once all try, and exactly one wins.
    pub async fn insert_issuer_if_absent(&self, issuer: &IssuerRecord) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO issuers (id, kind, root_cert_pem, root_key_pem, intermediate_cert_pem, intermediate_key_pem, \
             created_at, settings) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&issuer.id)
        .bind(&issuer.kind)
        .bind(&issuer.root_cert_pem)
        .bind(self.seal("issuers.root_key_pem", &issuer.id, issuer.root_key_pem.as_deref())?)
        .bind(&issuer.intermediate_cert_pem)
        .bind(self.seal(
            "issuers.intermediate_key_pem",
            &issuer.id,
            issuer.intermediate_key_pem.as_deref(),
        )?)
        .bind(to_ms(issuer.created_at))
        .bind(self.seal("issuers.settings", &issuer.id, issuer.settings.as_deref())?)
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Every issuer, by id.
    pub async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, root_cert_pem, root_key_pem, intermediate_cert_pem, intermediate_key_pem, created_at, \
             settings, account_credentials, account_url, health, health_detail, health_checked_at \
             FROM issuers ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|row| self.issuer_from_row(row)).collect()
    }

    /// One issuer, read from the writer (fresh after a concurrent update).
    pub async fn issuer(&self, id: &str) -> Result<Option<IssuerRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, kind, root_cert_pem, root_key_pem, intermediate_cert_pem, intermediate_key_pem, created_at, \
             settings, account_credentials, account_url, health, health_detail, health_checked_at \
             FROM issuers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(|row| self.issuer_from_row(row)).transpose()
    }

    /// Replaces an issuer's settings (config-file issuers: the file is the source of truth).
    /// Inserts the issuer when absent. Returns whether the settings changed. The comparison is
    /// on the decrypted settings, since each encryption of the same text differs.
    pub async fn upsert_issuer_settings(
        &self,
        id: &str,
        kind: &str,
        settings: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if let Some(existing) = self.issuer(id).await?
            && existing.kind == kind
            && existing.settings.as_deref() == Some(settings)
        {
            return Ok(false);
        }
        let res = sqlx::query(
            "INSERT INTO issuers (id, kind, settings, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET settings = excluded.settings, kind = excluded.kind",
        )
        .bind(id)
        .bind(kind)
        .bind(self.seal("issuers.settings", id, Some(settings))?)
        .bind(to_ms(now))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Stores an issuer's ACME account (after registration or key rollover).
    pub async fn set_issuer_account(
        &self,
        id: &str,
        credentials: Option<&str>,
        account_url: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE issuers SET account_credentials = $1, account_url = $2 WHERE id = $3")
            .bind(self.seal("issuers.account_credentials", id, credentials)?)
            .bind(account_url)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Stores a newly registered account unless another node stored one first; `false` then
    /// (read the winner's with [`Store::issuer`]).
    pub async fn set_issuer_account_if_absent(
        &self,
        id: &str,
        credentials: &str,
        account_url: &str,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE issuers SET account_credentials = $1, account_url = $2 WHERE id = $3 \
             AND account_credentials IS NULL",
        )
        .bind(self.seal("issuers.account_credentials", id, Some(credentials))?)
        .bind(account_url)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records an issuer's health check, on behalf of the lease holder that ran it (refused with
    /// [`StoreError::Fenced`] once the lease moved on).
    pub async fn set_issuer_health(&self, id: &str, health: &IssuerHealth, fence: &Fence) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        self.check_fence(&mut tx, fence).await?;
        let before: Option<Option<String>> = sqlx::query_scalar("SELECT health FROM issuers WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        // Announced when it turns unhealthy (or is first found so), not at every failed check.
        if !health.healthy && before.flatten().as_deref() != Some("unhealthy") {
            let event = NewEvent {
                kind: EventKind::IssuerUnhealthy,
                dedup_key: Some(format!("issuer_unhealthy:{id}:{}", to_ms(health.checked_at))),
                certificate_id: None,
                subject: Some(id.to_owned()),
                payload: serde_json::json!({"issuer": id, "detail": health.detail}),
                at: health.checked_at,
            };
            insert_events(&mut tx, &[event]).await?;
        }
        sqlx::query("UPDATE issuers SET health = $1, health_detail = $2, health_checked_at = $3 WHERE id = $4")
            .bind(if health.healthy { "healthy" } else { "unhealthy" })
            .bind(&health.detail)
            .bind(to_ms(health.checked_at))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    fn issuer_from_row(&self, row: &AnyRow) -> Result<IssuerRecord, StoreError> {
        let health = match (
            row.try_get::<Option<String>, _>("health")?,
            row.try_get::<Option<i64>, _>("health_checked_at")?,
        ) {
            (Some(health), Some(at)) => Some(IssuerHealth {
                healthy: health == "healthy",
                detail: row.try_get::<Option<String>, _>("health_detail")?.unwrap_or_default(),
                checked_at: from_ms(at)?,
            }),
            _ => None,
        };
        let id: String = row.try_get("id")?;
        Ok(IssuerRecord {
            kind: row.try_get("kind")?,
            root_cert_pem: row.try_get("root_cert_pem")?,
            root_key_pem: self.open("issuers.root_key_pem", &id, row.try_get("root_key_pem")?)?,
            intermediate_cert_pem: row.try_get("intermediate_cert_pem")?,
            intermediate_key_pem: self.open(
                "issuers.intermediate_key_pem",
                &id,
                row.try_get("intermediate_key_pem")?,
            )?,
            settings: self.open("issuers.settings", &id, row.try_get("settings")?)?,
            account_credentials: self.open("issuers.account_credentials", &id, row.try_get("account_credentials")?)?,
            account_url: row.try_get("account_url")?,
            health,
            created_at: from_ms(row.try_get("created_at")?)?,
            id,
        })
    }
}
