//! Secret columns are encrypted here, on the way in and out, so no other crate handles
//! ciphertext and no code path can forget it: server-made private keys, CA keys, ACME account
//! credentials, and issuer settings (which hold EAB MAC keys and DNS provider credentials).

use ck_secrets::SecretCipher;
use sqlx::Row;

use crate::{Store, StoreError};

/// The secret columns: `(table, primary key columns, secret column)`.
const SECRET_COLUMNS: [(&str, [&str; 2], &str); 6] = [
    ("issuers", ["id", "id"], "root_key_pem"),
    ("issuers", ["id", "id"], "intermediate_key_pem"),
    ("issuers", ["id", "id"], "settings"),
    ("issuers", ["id", "id"], "account_credentials"),
    (
        "certificate_versions",
        ["certificate_id", "CAST(version AS TEXT)"],
        "private_key_pem",
    ),
    ("acme_orders", ["job_id", "job_id"], "private_key_pem"),
];

impl Store {
    /// Encrypts a value for `table.column` (the pair is bound into the ciphertext).
    pub(crate) fn seal(&self, context: &str, value: Option<&str>) -> Result<Option<String>, StoreError> {
        value
            .map(|v| self.secrets.encrypt(v, context))
            .transpose()
            .map_err(|e| StoreError::Secrets(e.to_string()))
    }

    /// Decrypts a stored value of `table.column`. Plain values of databases from before
    /// encryption existed are returned as they are until [`Store::rewrap_secrets`] runs.
    pub(crate) fn open(&self, context: &str, stored: Option<String>) -> Result<Option<String>, StoreError> {
        match stored {
            Some(text) if ck_secrets::is_encrypted(&text) => self
                .secrets
                .decrypt(&text, context)
                .map(Some)
                .map_err(|e| StoreError::Secrets(format!("{context}: {e}"))),
            other => Ok(other),
        }
    }

    /// Re-encrypts every secret not yet under the current key-encryption key: plain values of
    /// earlier versions, and values under a retired KEK after a rotation. One transaction, so
    /// a crash leaves every value readable with the old or the new key. Returns how many.
    pub async fn rewrap_secrets(&self) -> Result<usize, StoreError> {
        let current = format!("ckenc:v1:{}:", self.secrets.current_id());
        let mut tx = self.write.begin().await?;
        let mut rewrapped = 0;
        for (table, [key1, key2], column) in SECRET_COLUMNS {
            // Only rows that need it: a start with nothing to do reads nothing.
            let rows = sqlx::query(sql!(
                "SELECT {key1} AS key1, {key2} AS key2, {column} AS secret FROM {table} \
                 WHERE {column} IS NOT NULL AND substr({column}, 1, {}) <> $1",
                current.len()
            ))
            .bind(&current)
            .fetch_all(&mut *tx)
            .await?;
            let context = format!("{table}.{column}");
            for row in rows {
                let (key1_value, key2_value): (String, String) = (row.try_get("key1")?, row.try_get("key2")?);
                let row_key = format!("{key1_value}/{key2_value}");
                let secret: String = row.try_get("secret")?;
                let Some(sealed) = self
                    .secrets
                    .rewrap(&secret, &context)
                    .map_err(|e| StoreError::Secrets(format!("{context} of {row_key}: {e}")))?
                else {
                    continue;
                };
                // Both key parts compare as text, so one statement serves both tables.
                sqlx::query(sql!(
                    "UPDATE {table} SET {column} = $1 WHERE {key1} = $2 AND {key2} = $3"
                ))
                .bind(sealed)
                .bind(&key1_value)
                .bind(&key2_value)
                .execute(&mut *tx)
                .await?;
                rewrapped += 1;
            }
        }
        tx.commit().await?;
        Ok(rewrapped)
    }

    /// The cipher (for a rotation that needs the current KEK's id).
    pub fn secret_cipher(&self) -> &SecretCipher {
        &self.secrets
    }
}
