//! Persistence for certkeeper on SQLite (embedded default) and PostgreSQL.
//!
//! One code path serves both engines through sqlx's `Any` driver with `$N` placeholders; the
//! few places where the engines differ live in `dialect`. This is the only crate that knows
//! SQL, and `sqlx::Error` never leaves it: callers see [`StoreError`].
//!
//! Times are stored as Unix milliseconds and ids as text, because `Any` has no portable
//! timestamp or UUID type.

/// Formats a statement from constant column lists and `$N` placeholders. Values are always
/// bound, never formatted in, which is what makes the statement safe to assert.
macro_rules! sql {
    ($($arg:tt)*) => {
        sqlx::AssertSqlSafe(format!($($arg)*))
    };
}

mod agents;
mod audit;
mod certificates;
mod cluster;
mod dialect;
mod issuers;
mod jobs;
mod metrics;
mod notices;
mod notifications;
mod rows;
mod secrets;
mod tokens;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use agents::{AgentCredential, AgentFacts, AgentRecord};
pub use audit::{AuditFilter, AuditRecord};
pub use certificates::{
    CertificateFilter, CertificateOrder, CertificatePage, CertificateTimes, Completion, NewVersion, Revocation,
    SerialStatus,
};
pub use cluster::{Fence, Lease, NodeRecord};
pub use dialect::Backend;
pub use issuers::{IssuerHealth, IssuerRecord};
pub use jobs::{ClaimedJob, EnqueueOutcome, JobFilter, RecordedOrder};
pub use metrics::IssuerTimes;
pub use notices::{Notice, NoticeListener};
pub use notifications::{
    DeliveryOutcome, EventRecord, NewEvent, NotificationFilter, NotificationRecord, NotificationState,
    OverdueCertificate, RouteDecision,
};
pub use tokens::TokenRecord;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database refused the operation.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database cannot be reached (connection refused or lost, server shutting down, no
    /// free connection in time): the operation may work once the database is back.
    #[error("database unreachable: {0}")]
    Disconnected(String),
    /// A stored value does not decode (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A singleton write whose lease moved to another holder or term.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A secret column cannot be decrypted (wrong or missing key-encryption key) or encrypted.
    #[error("secret column: {0}")]
    Secrets(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(db.message().to_owned()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) | sqlx::Error::Decode(_) => {
                Self::Corrupt(error.to_string())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Disconnected(error.to_string()),
            // SQLSTATE class 08 (connection exception) and 57P01-57P03 (the server shuts down,
            // crashed, or is starting): PostgreSQL's own words for "not reachable right now".
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")) =>
            {
                Self::Disconnected(error.to_string())
            }
            _ => Self::Unavailable(error.to_string()),
        }
    }
}

/// A database URL whose `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The SQLite database inside a data directory.
    pub fn sqlite_file(path: &std::path::Path) -> Self {
        Self(format!("sqlite://{}?mode=rwc", path.display()))
    }

    /// The full URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Which engine the URL names.
    pub fn backend(&self) -> Backend {
        if self.0.starts_with("postgres://") || self.0.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Creates an empty PostgreSQL database `name` (lowercase letters, digits, `_`) through this
    /// URL's server, and returns the URL that names it (for benchmarks and tests of clusters).
    pub async fn create_postgres_database(&self, name: &str) -> Result<DatabaseUrl, StoreError> {
        if self.backend() != Backend::Postgres {
            return Err(StoreError::Unavailable(
                "creating a database needs a postgres:// URL".to_owned(),
            ));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Unavailable(format!(
                "'{name}' is not a database name of lowercase letters, digits and _"
            )));
        }
        install_default_drivers();
        let pool = AnyPoolOptions::new().max_connections(1).connect(self.expose()).await?;
        // The name was checked above: identifiers cannot be bound as parameters.
        pool.execute(sqlx::raw_sql(sql!("CREATE DATABASE {name}"))).await?;
        pool.close().await;
        let (base, _) = self
            .0
            .split('?')
            .next()
            .and_then(|url| url.rsplit_once('/'))
            .ok_or_else(|| StoreError::Unavailable("the URL names no database".to_owned()))?;
        Ok(DatabaseUrl(format!("{base}/{name}")))
    }

    fn redacted(&self) -> String {
        // scheme://user:password@host → scheme://user:***@host
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let Some((credentials, host)) = rest.rsplit_once('@') else {
            return self.0.clone();
        };
        match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => self.0.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if known.iter().any(|prefix| s.starts_with(prefix)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "unsupported database URL '{s}' (use sqlite://PATH or postgres://USER@HOST:PORT/DB)"
            ))
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The store: a connection pool for writes and one for reads.
///
/// On SQLite the write pool has a single connection. SQLite admits one writer at a time
/// anyway; queueing writers in the pool instead of in SQLite's busy handler avoids
/// `SQLITE_BUSY` on lock upgrades and keeps write latency fair under load.
#[derive(Clone, Debug)]
pub struct Store {
    write: AnyPool,
    read: AnyPool,
    backend: Backend,
    secrets: ck_secrets::SecretCipher,
    /// For the LISTEN connection of cross-node notices (PostgreSQL).
    url: DatabaseUrl,
}

impl Store {
    /// Connects, applies pending migrations and returns the store, which encrypts and
    /// decrypts secret columns with `secrets`.
    pub async fn connect(url: &DatabaseUrl, secrets: ck_secrets::SecretCipher) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = url.backend();
        let (write, read) = match backend {
            Backend::Sqlite => {
                let write = sqlite_pool(url, 1).await?;
                let read = sqlite_pool(url, 4).await?;
                (write, read)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    // Short, so a request during a database outage falls back to the read cache
                    // (or a 503) in seconds instead of hanging.
                    .acquire_timeout(Duration::from_secs(3))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // A node paused (SIGSTOP, a VM freeze) inside a transaction would
                            // hold its row locks forever: the jobs it claimed, the lease row it
                            // share-locked. Our transactions never idle for seconds, so the
                            // server ends such a session and the cluster moves on.
                            conn.execute("SET idle_in_transaction_session_timeout = '5s'").await?;
                            Ok(())
                        })
                    })
                    .connect(url.expose())
                    .await?;
                (pool.clone(), pool)
            }
        };
        let store = Self {
            write,
            read,
            backend,
            secrets,
            url: url.clone(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Which engine is behind the store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&self.write)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Checks the database answers (readiness probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Closes every connection (graceful shutdown; on SQLite this checkpoints the WAL).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

async fn sqlite_pool(url: &DatabaseUrl, max_connections: u32) -> Result<AnyPool, StoreError> {
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; NORMAL sync in WAL mode survives a
                // process crash (kill -9) and only risks the last commits on power loss.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(())
            })
        })
        .connect(url.expose())
        .await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_hide_passwords() {
        let url: DatabaseUrl = "postgres://ck:s3cret@db.internal:5432/ck".parse().unwrap();
        assert_eq!(
            format!("{url:?}"),
            r#"DatabaseUrl("postgres://ck:***@db.internal:5432/ck")"#
        );
        assert_eq!(url.to_string(), "postgres://ck:***@db.internal:5432/ck");
        assert_eq!(url.backend(), Backend::Postgres);
        let no_password: DatabaseUrl = "postgres://ck@localhost/ck".parse().unwrap();
        assert_eq!(no_password.to_string(), "postgres://ck@localhost/ck");
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
    }
}
