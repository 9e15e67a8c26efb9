//! [`LoadedCert`]: a certificate chain and its key, checked once and then shared.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::CertError;
use crate::sni;

/// A certificate chain with its private key, validated and ready to be served.
///
/// Construction does all the checking ([`LoadedCert::from_pem`], [`LoadedCert::from_der`],
/// [`LoadedCert::from_files`]); afterwards a `LoadedCert` is immutable. Cloning it is cheap: it
/// is a reference-counted handle, and the [`CertifiedKey`] inside is the very `Arc` rustls
/// hands to connections.
#[derive(Clone)]
pub struct LoadedCert {
    inner: Arc<Inner>,
}

struct Inner {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs; names and validity are what an operator needs.
        f.debug_struct("LoadedCert")
            .field("names", &self.inner.names)
            .field("not_before", &self.inner.not_before)
            .field("not_after", &self.inner.not_after)
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    /// Loads a PEM certificate chain (leaf first, then intermediates) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// [`CertError::Pem`] for undecodable PEM, [`CertError::NoCertificate`] or
    /// [`CertError::NoPrivateKey`] when a section is missing, and every error of
    /// [`LoadedCert::from_der`].
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem).collect::<Result<Vec<_>, _>>()?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => return Err(CertError::NoPrivateKey),
            Err(err) => return Err(CertError::Pem(err)),
        };
        Self::from_der(chain, key)
    }

    /// Loads a DER certificate chain (leaf first) and its DER private key.
    ///
    /// Checks, in order: the chain is not empty and every certificate parses; the leaf is
    /// first (its issuer is the subject of the next certificate); the key is a type rustls can
    /// sign with and matches the leaf's public key; the leaf is valid now.
    ///
    /// The names served are the leaf's DNS subject alternative names, lowercased, as A-labels;
    /// wildcards stay `*.example.com`. The subject common name is not used, as in browsers and
    /// webpki.
    ///
    /// # Errors
    ///
    /// [`CertError::NoCertificate`], [`CertError::InvalidCertificate`], [`CertError::ChainOrder`],
    /// [`CertError::UnsupportedKey`], [`CertError::KeyMismatch`], [`CertError::Expired`],
    /// [`CertError::NotYetValid`].
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, CertError> {
        let (names, not_before, not_after) = {
            let leaf = chain.first().ok_or(CertError::NoCertificate)?;
            let leaf = parse(leaf, 0)?;
            let mut issuer_ok = true;
            for (index, der) in chain.iter().enumerate().skip(1) {
                let parsed = parse(der, index)?;
                if index == 1 {
                    issuer_ok = leaf.issuer().as_raw() == parsed.subject().as_raw();
                }
            }
            if !issuer_ok {
                return Err(CertError::ChainOrder);
            }
            let validity = leaf.validity();
            let not_before = timestamp(validity.not_before.timestamp(), 0)?;
            let not_after = timestamp(validity.not_after.timestamp(), 0)?;
            (dns_names(&leaf)?, not_before, not_after)
        };

        let signing_key = any_supported_type(&key).map_err(CertError::UnsupportedKey)?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // An unknown answer means the key type cannot expose its public half; like rustls, trust the operator.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(CertError::KeyMismatch),
            Err(err) => {
                return Err(CertError::InvalidCertificate {
                    index: 0,
                    reason: err.to_string(),
                });
            }
        }

        let now = OffsetDateTime::now_utc();
        if now > not_after {
            return Err(CertError::Expired { not_after });
        }
        if now < not_before {
            return Err(CertError::NotYetValid { not_before });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                key: Arc::new(certified),
                names,
                not_before,
                not_after,
            }),
        })
    }

    /// The DNS names this certificate serves: lowercase A-labels, wildcards as `*.example.com`.
    pub fn names(&self) -> &[String] {
        &self.inner.names
    }

    /// Start of the validity period of the leaf.
    pub fn not_before(&self) -> OffsetDateTime {
        self.inner.not_before
    }

    /// End of the validity period of the leaf.
    pub fn not_after(&self) -> OffsetDateTime {
        self.inner.not_after
    }

    /// The chain and signing key as rustls serves them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.inner.key
    }

    /// Checks that every name is covered by this certificate, exactly or by a wildcard one
    /// label up. Names may be in any case, with a trailing dot, or in U-labels.
    ///
    /// # Errors
    ///
    /// [`CertError::MissingNames`] lists the names (as given) that are not covered.
    pub fn require_names(&self, names: &[&str]) -> Result<(), CertError> {
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !sni::normalize(name).is_some_and(|canonical| sni::covers(&self.inner.names, &canonical)))
            .map(|name| name.to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CertError::MissingNames(missing))
        }
    }
}

fn parse<'a>(der: &'a CertificateDer<'_>, index: usize) -> Result<X509Certificate<'a>, CertError> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::InvalidCertificate {
            index,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(err) => Err(CertError::InvalidCertificate {
            index,
            reason: err.to_string(),
        }),
    }
}

fn timestamp(seconds: i64, index: usize) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|err| CertError::InvalidCertificate {
        index,
        reason: err.to_string(),
    })
}

fn dns_names(leaf: &X509Certificate<'_>) -> Result<Vec<String>, CertError> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|err| CertError::InvalidCertificate {
            index: 0,
            reason: err.to_string(),
        })?;
    let mut names = Vec::new();
    for general in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let GeneralName::DNSName(name) = general {
            // Names no client could ever match are left out instead of failing the load; the
            // rest of the certificate is still useful.
            match sni::normalize(name) {
                Some(canonical) if sni::pattern(&canonical).is_some() => {
                    let canonical = canonical.into_owned();
                    if !names.contains(&canonical) {
                        names.push(canonical);
                    }
                }
                _ => tracing::debug!(name = %name, "ignoring unusable DNS name in certificate"),
            }
        }
    }
    names.shrink_to_fit();
    Ok(names)
}
