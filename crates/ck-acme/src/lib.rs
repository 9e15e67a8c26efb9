//! ACME (RFC 8555) issuance flow for certkeeper's `acme` issuers.
//!
//! This crate speaks ACME through [`instant_acme`] and knows nothing of the database or of HTTP
//! routing: the control plane stores what [`AcmeIssuer`] hands back (account credentials,
//! certificate chains, problem documents) and serves what [`ChallengeResponder`] holds.
//!
//! - [`config`]: an issuer's settings (directory, contact, EAB, CA bundle, challenge solver).
//! - [`account`]: registration, restore from stored credentials, key rollover, deactivation,
//!   health checks.
//! - [`order`]: one order from identifiers to a downloaded chain, with challenge clean-up on
//!   every path and `badNonce` retried transparently.
//! - [`responder`]: the shared http-01 token and tls-alpn-01 certificate tables, and the
//!   tls-alpn-01 listener.
//! - `chains`: alternate chains and the preferred-chain choice.
//! - [`error`]: failures with the CA's problem document and whether a retry can help.

pub mod account;
mod chains;
pub mod config;
mod dns01;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod order;
pub mod responder;
pub mod stats;

pub use account::{AccountCheck, AcmeIssuer, RegisteredAccount};
pub use config::{
    AcmeIssuerConfig, ChallengeKind, Dns01Config, EabConfig, Http01Config, ListenerConfig, OperatorCatalog,
    SettingsOrigin, SolverConfig, TlsAlpn01Config,
};
pub use error::{AcmeFailure, ProblemDocument, SubproblemDocument};
pub use order::{IssuedChain, OpenOrder, OrderRequest, RenewalWindow};
pub use responder::{BoxFuture, ChallengeResponder, SharedHttp01, serve_tls_alpn01};
