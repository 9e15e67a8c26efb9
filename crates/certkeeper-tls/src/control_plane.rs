//! Certificates from a certkeeper control plane (feature `control-plane`): the server asks the
//! API for its certificates and keeps them current, so the control plane's renewals reach the
//! running server without files or restarts.

use std::sync::Arc;
use std::time::Duration;

use ck_client::Client;

use crate::{CertError, CertStore, LoadedCert};

/// Why a certificate could not be taken from the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The API refused or could not be reached.
    #[error("control plane: {0}")]
    Api(#[from] ck_client::ClientError),
    /// The certificate has no issued version yet.
    #[error("certificate {0} has no issued version yet")]
    NotIssued(String),
    /// What the API returned is not a usable certificate and key.
    #[error("certificate {id}: {source}")]
    Cert {
        /// The certificate id.
        id: String,
        /// Why.
        source: CertError,
    },
}

/// One managed certificate to serve.
#[derive(Clone)]
pub struct ManagedCert {
    /// The certificate's id in the control plane (also its id in the store).
    pub id: String,
    /// The private key (PEM) when the key was made here and only a CSR was sent (CSR mode);
    /// `None` fetches the server-generated key from the API.
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ManagedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCert")
            .field("id", &self.id)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Fetches the current version of `cert` and publishes it; returns its fingerprint.
pub async fn load(client: &Client, store: &CertStore, cert: &ManagedCert) -> Result<String, ControlPlaneError> {
    let info = client.certificate(&cert.id).await?;
    let fingerprint = info
        .fingerprint
        .clone()
        .ok_or_else(|| ControlPlaneError::NotIssued(cert.id.clone()))?;
    let chain = client.chain_pem(&cert.id, Some(info.current_version)).await?;
    let key = match &cert.key_pem {
        Some(key) => key.clone(),
        None => client.key_pem(&cert.id, Some(info.current_version)).await?.into_bytes(),
    };
    let loaded = LoadedCert::from_pem(chain.as_bytes(), &key).map_err(|source| ControlPlaneError::Cert {
        id: cert.id.clone(),
        source,
    })?;
    store
        .insert(&cert.id, loaded)
        .map_err(|source| ControlPlaneError::Cert {
            id: cert.id.clone(),
            source,
        })?;
    Ok(fingerprint)
}

/// Keeps `certs` current: checks each every `interval` and publishes a new version as soon as
/// the control plane has one. Failures are logged and retried; what is served stays. Drop or
/// abort the handle to stop.
pub fn keep_current(
    client: Client,
    store: Arc<CertStore>,
    certs: Vec<ManagedCert>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut loaded: Vec<Option<String>> = vec![None; certs.len()];
        loop {
            for (cert, current) in certs.iter().zip(loaded.iter_mut()) {
                let latest = match client.certificate(&cert.id).await {
                    Ok(info) => info.fingerprint,
                    Err(error) => {
                        tracing::warn!(certificate = %cert.id, %error, "control plane unreachable; serving what is loaded");
                        continue;
                    }
                };
                if latest.is_none() || latest == *current {
                    continue;
                }
                match load(&client, &store, cert).await {
                    Ok(fingerprint) => {
                        tracing::info!(certificate = %cert.id, %fingerprint, "new version from the control plane");
                        *current = Some(fingerprint);
                    }
                    Err(error) => tracing::warn!(certificate = %cert.id, %error, "new version not loaded"),
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}
