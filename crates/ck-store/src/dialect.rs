//! The few SQL differences between SQLite and PostgreSQL, in one place.

/// The database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (single writer; WAL).
    Sqlite,
    /// PostgreSQL (many writers; row locks).
    Postgres,
}

impl Backend {
    /// Appended to the sub-select that picks jobs to claim. On PostgreSQL concurrent claimers
    /// skip each other's locked rows instead of waiting; SQLite serializes writers anyway.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Appended to the fence check of a singleton write: on PostgreSQL the lease row stays
    /// share-locked until the write commits, so a takeover waits for it (and the write cannot
    /// land after a newer epoch). SQLite serializes writers anyway.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR SHARE",
        }
    }

    /// The engine's name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}
