//! Live certificate hot-swap, SNI selection and automatic certificates for rustls servers.
//!
//! A TLS server built on [rustls] picks its certificate through one trait,
//! [`rustls::server::ResolvesServerCert`], consulted once per handshake. This crate provides
//! [`CertStore`], an implementation of that trait holding any number of certificates that can be
//! added, replaced and removed while the server runs, without a restart and without a failed
//! handshake.
//!
//! # The model
//!
//! * A [`LoadedCert`] is a certificate chain and its private key that passed every check this
//!   crate knows: the chain parses and is leaf first, the key is usable and belongs to the leaf,
//!   the leaf is valid now. Invalid input never becomes a `LoadedCert`, so it can never be served.
//! * A [`CertStore`] holds `LoadedCert`s under ids the application chooses (a site name, a
//!   database key, a file name). Ids are how the application refers to certificates; names
//!   (the DNS names in the certificates) are how clients do.
//! * Per handshake the store picks the certificate for the client's server name (SNI): exact
//!   name first, then a wildcard one label up, then the [`Fallback`]. See the
//!   [`manual`] for the exact rules and how ties are broken.
//! * Changes ([`CertStore::insert`], [`CertStore::update`], [`CertStore::remove`], ...) publish
//!   a new immutable snapshot atomically. Handshakes never wait for a change and never see half
//!   of one; connections already open keep the certificate they were established with.
//!
//! # Serving
//!
//! ```no_run
//! use std::sync::Arc;
//! use certkeeper_tls::{CertStore, Fallback, LoadedCert};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = CertStore::new();
//! store.insert("shop", LoadedCert::from_files("shop.crt", "shop.key")?)?;
//! store.insert("blog", LoadedCert::from_files("blog.crt", "blog.key")?)?;
//! store.set_fallback(Fallback::Certificate("shop".into()));
//!
//! let config = rustls::ServerConfig::builder()
//!     .with_no_client_auth()
//!     .with_cert_resolver(store.clone());
//! let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
//!
//! // Later, from any thread: the next handshake serves the new certificate.
//! store.update("shop", LoadedCert::from_files("shop-renewed.crt", "shop-renewed.key")?, &[])?;
//! # let _ = acceptor;
//! # Ok(())
//! # }
//! ```
//!
//! # Files
//!
//! [`watch_files`] loads a certificate/key pair from PEM files and reloads it whenever the files
//! change, keeping the old certificate if the new pair is bad; [`FileWatcher::events`] reports
//! each outcome.
//!
//! # Automatic certificates
//!
//! With the `acme` feature (on by default) the autocert manager obtains and renews
//! certificates from an ACME CA and publishes them into a `CertStore`; see the [`manual`].
//!
//! # Errors
//!
//! Everything that can go wrong loading or publishing a certificate is a [`CertError`]; a
//! refused certificate never replaces the one being served.

#[cfg(feature = "acme")]
pub mod autocert;
#[cfg(feature = "control-plane")]
pub mod control_plane;
pub mod manual;

mod cert;
mod error;
mod files;
mod sni;
mod store;

pub use cert::LoadedCert;
pub use error::CertError;
pub use files::{FileEvent, FileWatcher, watch_files};
pub use store::{ACME_TLS_ALPN_PROTOCOL, AcmeTlsAlpnLookup, CertStore, Fallback};
