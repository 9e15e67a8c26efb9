//! The pure model of certkeeper: certificates, names, key types, renewal policy and the job
//! state machine.
//!
//! This crate does no I/O and never reads the clock: every function that depends on time takes
//! `now`, and every random choice (renewal jitter, retry jitter) takes the random sample as an
//! argument, so the rules are unit-tested without servers.

mod access;
mod certificate;
mod ids;
mod job;
mod key_type;
mod labels;
mod names;
mod notification;
mod rate_limit;
mod renewal;
mod revocation;

pub use access::{Restriction, RestrictionError, Scope, Scopes, UnknownScope, parse_lifetime};
pub use certificate::{
    Certificate, CertificateStatus, CertificateVersion, CsrNames, IpRange, IpRangeError, IssuanceRequest, KeySource,
    NamePolicy, RequestError, leaf_validity,
};
pub use ids::{CertificateId, IdError, IssuerId, JobId};
pub use job::{Job, JobKind, JobState, RetryPolicy, TransitionError};
pub use key_type::{KeyType, UnknownKeyType};
pub use labels::{LabelError, Labels};
pub use names::{DnsName, NameError, SubjectAltName};
pub use notification::{EventKind, ExpiryThresholds, Route, ThresholdError, UnknownEventKind, renewal_failure_period};
pub use rate_limit::TokenBuckets;
pub use renewal::{PolicyError, RenewalPolicy, RenewalTrigger, renew_within_window};
pub use revocation::{RevocationReason, RevocationScope, UnknownRevocationReason};
