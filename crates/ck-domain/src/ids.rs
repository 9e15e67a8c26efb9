//! Identifier newtypes, so a job id can never be passed where a certificate id is expected.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An identifier failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Certificate and job ids are UUIDs.
    #[error("'{0}' is not a valid id (expected a UUID such as 0192f1e4-7c3a-7b21-9d4e-5a6b7c8d9e0f)")]
    NotUuid(String),
    /// Issuer ids are short slugs.
    #[error("'{0}' is not a valid issuer id (expected 1-64 characters of a-z, 0-9, '-' or '_')")]
    BadIssuerId(String),
}

macro_rules! uuid_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id, so ids sort by creation time.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The UUID inside.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| IdError::NotUuid(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lower case: the textual order matches the UUIDv7 time order, which
                // the store relies on for cursor pagination.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

uuid_id!(CertificateId, "Identifies a managed certificate (all its versions).");
uuid_id!(JobId, "Identifies a job in the queue.");

/// Identifies an issuer, such as `local` (the built-in private CA).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerId(String);

impl IssuerId {
    /// The built-in private CA created on first start.
    pub fn local() -> Self {
        Self("local".to_owned())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IssuerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(IdError::BadIssuerId(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_creation() {
        let first = CertificateId::new();
        let second = CertificateId::new();
        assert!(first.to_string() < second.to_string());
        assert_eq!(first.to_string().parse::<CertificateId>(), Ok(first));
        assert!("nope".parse::<JobId>().is_err());
    }

    #[test]
    fn issuer_ids_are_slugs() {
        assert_eq!("local".parse::<IssuerId>(), Ok(IssuerId::local()));
        assert!("Local".parse::<IssuerId>().is_err());
        assert!("".parse::<IssuerId>().is_err());
        assert!("a/b".parse::<IssuerId>().is_err());
    }
}
