//! The local CA's public PKI answers: CRLs now (OCSP, EST and SCEP come next).
//!
//! A CRL is signed once and served from memory until half its validity has passed or a
//! revocation on this node makes it stale; then the next request (or the revocation itself)
//! signs a new one with the next CRL number from the store. One signing at a time per issuer:
//! concurrent requests wait for it rather than each signing their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ck_domain::IssuerId;
use ck_pki::{CrlRequest, RevokedSerial};
use time::OffsetDateTime;

use crate::issuers::Issuer;
use crate::{ControlPlane, ServiceError, now};

/// A signed CRL, as served.
#[derive(Debug, Clone)]
pub struct SignedCrl {
    /// DER.
    pub der: Vec<u8>,
    /// Its CRL number.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// How many serials it lists.
    pub entries: usize,
}

impl SignedCrl {
    /// PEM (`X509 CRL`).
    pub fn pem(&self) -> String {
        ck_pki::pem_encode("X509 CRL", &self.der)
    }
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<SignedCrl>>,
    /// A revocation since `current` was signed.
    stale: bool,
}

/// Per issuer: the CRL in use, behind a lock held while a new one is signed.
#[derive(Default)]
pub(crate) struct CrlCache {
    slots: Mutex<HashMap<IssuerId, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl CrlCache {
    fn slot(&self, issuer: &IssuerId) -> Arc<tokio::sync::Mutex<Slot>> {
        match self.slots.lock() {
            Ok(mut slots) => slots.entry(issuer.clone()).or_default().clone(),
            // A poisoned map only loses the cache: sign anew.
            Err(_) => Arc::default(),
        }
    }
}

impl ControlPlane {
    /// The current CRL of a local CA issuer, signed anew when stale.
    pub async fn crl(&self, issuer: &str) -> Result<Arc<SignedCrl>, ServiceError> {
        let id: IssuerId = issuer
            .parse()
            .map_err(|e| ServiceError::NotFound(format!("issuer '{issuer}' ({e})")))?;
        let ca = match self.inner.issuers.get(&id) {
            Some(Issuer::Local(ca)) => ca,
            Some(Issuer::Acme(_)) => {
                return Err(ServiceError::NotFound(format!(
                    "a CRL of issuer '{id}': it is an ACME CA, which publishes its own"
                )));
            }
            None => return Err(ServiceError::NotFound(format!("issuer '{id}'"))),
        };
        let slot = self.inner.crls.slot(&id);
        let mut slot = slot.lock().await;
        let now = now();
        let refresh_after = self.inner.config.crl_validity / 2;
        if let Some(current) = &slot.current
            && !slot.stale
            && now < current.this_update + refresh_after
        {
            return Ok(current.clone());
        }
        let revoked: Vec<RevokedSerial> = self
            .inner
            .store
            .revocations(id.as_str(), now)
            .await?
            .into_iter()
            .map(|r| RevokedSerial {
                serial_hex: r.serial,
                revoked_at: r.revoked_at,
                reason: r.reason,
            })
            .collect();
        let number = self.inner.store.next_crl_number(id.as_str()).await?;
        let next_update = now + self.inner.config.crl_validity;
        let started = std::time::Instant::now();
        let (der, revoked) = tokio::task::spawn_blocking(move || {
            let request = CrlRequest {
                number,
                this_update: now,
                next_update,
                revoked: &revoked,
            };
            (ca.sign_crl(&request), revoked.len())
        })
        .await
        .map_err(|e| ServiceError::Unavailable(format!("signing the CRL stopped: {e}")))?;
        let der = der.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        tracing::info!(issuer = %id, number, entries = revoked, bytes = der.len(), took_ms = started.elapsed().as_millis(),
            "signed a CRL");
        let signed = Arc::new(SignedCrl {
            der,
            number,
            this_update: now,
            next_update,
            entries: revoked,
        });
        slot.current = Some(signed.clone());
        slot.stale = false;
        Ok(signed)
    }

    /// Marks the issuer's CRL stale after a revocation and signs the next one in the
    /// background, so the revocation is published without waiting for a request.
    pub(crate) async fn revoked_on(&self, issuer: &IssuerId) {
        if !matches!(self.inner.issuers.get(issuer), Some(Issuer::Local(_))) {
            return;
        }
        self.inner.crls.slot(issuer).lock().await.stale = true;
        let control_plane = self.clone();
        let issuer = issuer.to_string();
        tokio::spawn(async move {
            if let Err(error) = control_plane.crl(&issuer).await {
                tracing::warn!(%issuer, %error, "signing the CRL after a revocation failed; the next request retries");
            }
        });
    }
}
