//! The one error type of the crate: why a certificate was not loaded, not published, or not watched.

use std::path::PathBuf;

use time::OffsetDateTime;

/// Why a certificate (or a certificate/key pair) was refused.
///
/// Every refusal leaves the [`CertStore`](crate::CertStore) untouched: whatever was being
/// served before keeps being served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The PEM text could not be decoded (bad base64, a section without its END line, ...).
    #[error("malformed PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// The certificate input held no certificate at all.
    #[error("no certificate found in the certificate input")]
    NoCertificate,
    /// The key input held no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in the key input")]
    NoPrivateKey,
    /// A certificate of the chain is not valid X.509 DER.
    #[error("certificate {index} of the chain is not valid X.509: {reason}")]
    InvalidCertificate {
        /// Position in the chain, the leaf being 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// The chain is not in leaf-first order: the first certificate was not issued by the second.
    #[error("the chain is not leaf first: certificate 0 was not issued by certificate 1")]
    ChainOrder,
    /// The private key is of a type rustls cannot sign with.
    #[error("unsupported private key: {0}")]
    UnsupportedKey(#[source] rustls::Error),
    /// The private key does not belong to the leaf certificate.
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
    /// The leaf certificate has expired.
    #[error("the certificate expired at {not_after}")]
    Expired {
        /// When it stopped being valid.
        not_after: OffsetDateTime,
    },
    /// The leaf certificate is not valid yet.
    #[error("the certificate is not valid before {not_before}")]
    NotYetValid {
        /// When it starts being valid.
        not_before: OffsetDateTime,
    },
    /// The certificate does not cover names it is required to cover.
    #[error("the certificate does not cover: {}", .0.join(", "))]
    MissingNames(Vec<String>),
    /// A certificate id was empty.
    #[error("a certificate id must not be empty")]
    InvalidId,
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file watcher could not be set up.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The directory that could not be watched.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: notify::Error,
    },
}
