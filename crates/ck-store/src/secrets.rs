//! Secret columns are encrypted here, on the way in and out, so no other crate handles
//! ciphertext and no code path can forget it: server-made private keys, CA keys, ACME account
//! credentials, and issuer settings (which hold EAB MAC keys and DNS provider credentials).
//!
//! Each value is bound to its column and its row (see [`row_id`]): someone who can write the
//! database cannot move a sealed value to another row (another issuer's CA key, another
//! certificate's private key) and have it open there, and cannot put plaintext where a sealed
//! value belongs and have it read. Plaintext is accepted in exactly one place: the rewrap at
//! start of a database from before encryption at rest, i.e. one that holds no sealed value yet.

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

/// The row id bound into a sealed value: the primary key as text, its two parts joined by `/`
/// when it has two (`<certificate id>/<version>`). Callers that seal or open pass the same.
pub(crate) fn row_id(key1: &str, key2: Option<&str>) -> String {
    match key2 {
        Some(key2) => format!("{key1}/{key2}"),
        None => key1.to_owned(),
    }
}

impl Store {
    /// Encrypts a value for `table.column` (`context`) in the row `row` (see [`row_id`]); both
    /// are bound into the ciphertext.
    pub(crate) fn seal(&self, context: &str, row: &str, value: Option<&str>) -> Result<Option<String>, StoreError> {
        value
            .map(|v| self.secrets.encrypt(v, context, row))
            .transpose()
            .map_err(|e| StoreError::Secrets(e.to_string()))
    }

    /// Decrypts a stored value of `table.column` in row `row`. Plaintext is refused: every
    /// value is sealed on the way in, and [`Store::rewrap_secrets`] (run at start, before
    /// anything is read) seals those of a database from before encryption at rest.
    pub(crate) fn open(&self, context: &str, row: &str, stored: Option<String>) -> Result<Option<String>, StoreError> {
        stored
            .map(|text| {
                self.secrets
                    .decrypt(&text, context, row)
                    .map_err(|e| StoreError::Secrets(format!("{context} of row {row}: {e}{}", plaintext_hint(&text))))
            })
            .transpose()
    }

    /// Re-encrypts every secret not yet in the current format under the current KEK: values
    /// under a retired KEK after a rotation, values of format v1 (bound to their column only),
    /// and the plain values of a database from before encryption at rest. One transaction, so
    /// a crash leaves every value readable with the old or the new key. Returns how many.
    ///
    /// Plaintext is sealed only while the database holds no sealed value at all (its first
    /// start with encryption): once one value is sealed, every later one was sealed on the way
    /// in, so a plain value can only have been written behind certkeeper's back, and is an
    /// error instead of being adopted (it could be a CA key an attacker chose).
    pub async fn rewrap_secrets(&self) -> Result<usize, StoreError> {
        let current = self.secrets.current_prefix();
        let mut tx = self.write.begin().await?;
        let mut pending = Vec::new();
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
            for row in rows {
                let (key1_value, key2_value): (String, String) = (row.try_get("key1")?, row.try_get("key2")?);
                let secret: String = row.try_get("secret")?;
                pending.push((table, [key1, key2], column, key1_value, key2_value, secret));
            }
        }
        let has_plaintext = pending.iter().any(|(.., secret)| !ck_secrets::is_encrypted(secret));
        if has_plaintext && self.any_sealed_value(&mut tx).await? {
            let (table, _, column, key1_value, key2_value, _) = pending
                .iter()
                .find(|(.., secret)| !ck_secrets::is_encrypted(secret))
                .ok_or_else(|| StoreError::Secrets("plaintext vanished".to_owned()))?;
            let row = row_id(key1_value, (key1_value != key2_value).then_some(key2_value.as_str()));
            return Err(StoreError::Secrets(format!(
                "{table}.{column} of row {row} holds plaintext where a sealed value is expected, in a database whose \
                 other secrets are sealed: it was written outside certkeeper. Restore the row from a backup (or set \
                 the column to NULL and recreate the secret); nothing was changed"
            )));
        }
        let mut rewrapped = 0;
        for (table, [key1, key2], column, key1_value, key2_value, secret) in pending {
            let context = format!("{table}.{column}");
            let row = row_id(&key1_value, (key1 != key2).then_some(key2_value.as_str()));
            let sealed = if ck_secrets::is_encrypted(&secret) {
                self.secrets.rewrap(&secret, &context, &row)
            } else {
                self.secrets.encrypt(&secret, &context, &row).map(Some)
            }
            .map_err(|e| StoreError::Secrets(format!("{context} of row {row}: {e}")))?;
            let Some(sealed) = sealed else {
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
        tx.commit().await?;
        Ok(rewrapped)
    }

    /// Whether any secret column holds a sealed value (any format, any KEK).
    async fn any_sealed_value(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<bool, StoreError> {
        for (table, _, column) in SECRET_COLUMNS {
            let found: Option<i64> = sqlx::query_scalar(sql!(
                "SELECT 1 FROM {table} WHERE substr({column}, 1, 6) = 'ckenc:' LIMIT 1"
            ))
            .fetch_optional(&mut **tx)
            .await?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The cipher (for a rotation that needs the current KEK's id).
    pub fn secret_cipher(&self) -> &SecretCipher {
        &self.secrets
    }
}

/// A hint for a value that is not sealed at all (the decryption error alone would say "not
/// an encrypted secret" without the way out).
fn plaintext_hint(stored: &str) -> &'static str {
    if ck_secrets::is_encrypted(stored) {
        ""
    } else {
        " (plaintext in a sealed column is refused: it was written outside certkeeper; restore the row from a backup)"
    }
}
