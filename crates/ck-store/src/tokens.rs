//! API tokens: only their salted hashes, scopes, restriction and lifetime are stored.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::rows::{from_ms, to_ms};
use crate::{Store, StoreError};

/// A stored API token. The plain token never reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Row id.
    pub id: String,
    /// Display name, unique among live tokens.
    pub name: String,
    /// The public part of the token that finds its row (`None` for tokens of earlier versions,
    /// found by their bare hash).
    pub token_key: Option<String>,
    /// The salted hash (or, for earlier tokens, the bare SHA-256).
    pub token_hash: String,
    /// Comma-separated scopes.
    pub scopes: String,
    /// JSON restriction, `None` when unrestricted.
    pub restriction: Option<String>,
    /// When the token stops working.
    pub expires_at: Option<OffsetDateTime>,
    /// When the expiry loop noticed it had expired.
    pub expired_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// The last time its secret was replaced.
    pub rotated_at: Option<OffsetDateTime>,
    /// Who made it (`token:<name>`, or `bootstrap`).
    pub created_by: Option<String>,
    /// The subject of the TLS client certificate that signed in as this token before
    /// certificates were bound by fingerprint (listed, no longer honoured).
    pub client_subject: Option<String>,
    /// The SHA-256 (lowercase hex, of the DER) of the TLS client certificate that signs in as
    /// this token.
    pub client_cert_sha256: Option<String>,
    /// When it was made.
    pub created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, name, token_key, token_hash, scopes, restriction, expires_at, expired_at, revoked_at, \
                       rotated_at, created_by, created_at, client_subject, client_cert_sha256";

fn token_from_row(row: &AnyRow) -> Result<TokenRecord, StoreError> {
    let time = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?.map(from_ms).transpose()
    };
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        token_key: row.try_get("token_key")?,
        token_hash: row.try_get("token_hash")?,
        scopes: row.try_get("scopes")?,
        restriction: row.try_get("restriction")?,
        expires_at: time("expires_at")?,
        expired_at: time("expired_at")?,
        revoked_at: time("revoked_at")?,
        rotated_at: time("rotated_at")?,
        created_by: row.try_get("created_by")?,
        created_at: from_ms(row.try_get("created_at")?)?,
        client_subject: row.try_get("client_subject")?,
        client_cert_sha256: row.try_get("client_cert_sha256")?,
    })
}

impl Store {
    /// Stores a new token.
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        insert(&mut *self.write.acquire().await?, token).await
    }

    /// Revokes every live token named like `token` and stores `token` (the admin token reset),
    /// in one transaction.
    pub async fn replace_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(to_ms(token.created_at))
            .bind(&token.name)
            .execute(&mut *tx)
            .await?;
        insert(&mut tx, token).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every stored token, revoked and expired ones included, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(sql!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a live token; `NotFound` when there is no live token with this id.
    pub async fn revoke_token(&self, id: &str, now: OffsetDateTime) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(sql!(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind(to_ms(now))
        .bind(id)
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }

    /// Replaces a live token's secret (new key and hash); the old secret stops working.
    pub async fn rotate_token(
        &self,
        id: &str,
        token_key: &str,
        token_hash: &str,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(sql!(
            "UPDATE api_tokens SET token_key = $1, token_hash = $2, rotated_at = $3 \
             WHERE id = $4 AND revoked_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind(token_key)
        .bind(token_hash)
        .bind(to_ms(now))
        .bind(id)
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        token_from_row(&row)
    }

    /// Marks live tokens whose lifetime has passed and returns them (each exactly once, even
    /// with several nodes running the loop).
    pub async fn mark_expired_tokens(&self, now: OffsetDateTime) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query(sql!(
            "UPDATE api_tokens SET expired_at = $1 WHERE expires_at <= $1 AND expired_at IS NULL \
             AND revoked_at IS NULL RETURNING {COLUMNS}"
        ))
        .bind(to_ms(now))
        .fetch_all(&self.write)
        .await?;
        rows.iter().map(token_from_row).collect()
    }
}

async fn insert(conn: &mut sqlx::AnyConnection, token: &TokenRecord) -> Result<(), StoreError> {
    let ms = |t: Option<OffsetDateTime>| t.map(to_ms);
    sqlx::query(sql!(
        "INSERT INTO api_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(&token.id)
    .bind(&token.name)
    .bind(&token.token_key)
    .bind(&token.token_hash)
    .bind(&token.scopes)
    .bind(&token.restriction)
    .bind(ms(token.expires_at))
    .bind(ms(token.expired_at))
    .bind(ms(token.revoked_at))
    .bind(ms(token.rotated_at))
    .bind(&token.created_by)
    .bind(to_ms(token.created_at))
    .bind(&token.client_subject)
    .bind(&token.client_cert_sha256)
    .execute(conn)
    .await?;
    Ok(())
}
