//! Errors of the control-plane services, sorted by who must act: the caller (invalid,
//! not found, conflict) or the operator (unavailable).

use ck_store::StoreError;

/// A refused or failed service call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request is malformed or breaks a rule; the message says which and how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The caller's token does not allow this; the message says which token would.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A remote CA refused or failed; the message carries its answer.
    #[error("{0}")]
    Upstream(String),
    /// The store or another dependency failed; retrying later may work.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The database does not answer: writes are refused until it does.
    #[error("the database is unreachable; try again in {} s", retry_after.as_secs())]
    DatabaseUnreachable {
        /// When to try again.
        retry_after: std::time::Duration,
    },
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound("resource".to_owned()),
            StoreError::Conflict(message) => Self::Conflict(message),
            StoreError::Disconnected(_) => Self::database_unreachable(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// What a client is told to wait before writing again during a database outage.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl ServiceError {
    /// The refusal of a write while the database is unreachable.
    pub(crate) fn database_unreachable() -> Self {
        Self::DatabaseUnreachable {
            retry_after: RETRY_AFTER,
        }
    }
}
