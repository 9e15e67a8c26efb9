//! The local CA's public PKI answers: CRLs and OCSP (EST and SCEP come next).
//!
//! A CRL is signed once and served from memory until half its validity has passed or a
//! revocation on this node makes it stale; then the next request (or the revocation itself)
//! signs a new one with the next CRL number from the store. One signing at a time per issuer:
//! concurrent requests wait for it rather than each signing their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ck_domain::IssuerId;
use ck_pki::{CrlRequest, OcspErrorStatus, OcspSigner, OcspStatus, RevokedSerial, ocsp_error_response};
use ck_store::SerialStatus;
use time::OffsetDateTime;

use ck_store::Store;

use crate::issuers::{Issuer, Issuers};
use crate::{ServerConfig, ServiceError, now};

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
struct CrlCache {
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

/// The local CAs' revocation services: CRLs, OCSP, and which of its certificates a client
/// presented. Cheap to clone.
#[derive(Clone)]
pub struct Pki(Arc<PkiState>);

/// What [`Pki`] holds, shared by its clones.
pub struct PkiState {
    store: Store,
    config: Arc<ServerConfig>,
    issuers: Issuers,
    /// The local CAs' CRLs.
    crls: Arc<CrlCache>,
    /// The local CAs' OCSP responders and cached responses.
    ocsp: Arc<OcspResponders>,
}

impl std::ops::Deref for Pki {
    type Target = PkiState;

    fn deref(&self) -> &PkiState {
        &self.0
    }
}

impl Pki {
    pub(crate) fn new(store: Store, config: Arc<ServerConfig>, issuers: Issuers) -> Self {
        Self(Arc::new(PkiState {
            store,
            config,
            issuers,
            crls: Arc::new(CrlCache::default()),
            ocsp: Arc::new(OcspResponders::default()),
        }))
    }

    /// How many OCSP responses are cached now (a gauge of `/metrics`).
    pub(crate) fn cached_ocsp_responses(&self) -> usize {
        self.ocsp.cached_responses()
    }
}

impl Pki {
    /// The local CA issuer named `issuer`, for a public PKI endpoint (`what`, for messages).
    pub(crate) fn local_ca(&self, issuer: &str, what: &str) -> Result<(IssuerId, Arc<ck_pki::LocalCa>), ServiceError> {
        let id: IssuerId = issuer
            .parse()
            .map_err(|e| ServiceError::NotFound(format!("issuer '{issuer}' ({e})")))?;
        match self.issuers.known(&id) {
            Some(Issuer::Local(ca)) => Ok((id, ca)),
            Some(Issuer::Acme(_)) => Err(ServiceError::NotFound(format!(
                "{what} for issuer '{id}': it is an ACME CA, which runs its own"
            ))),
            None => Err(ServiceError::NotFound(format!("issuer '{id}'"))),
        }
    }

    /// Which of our local CAs issued `cert_der` (a certificate a client presented), and what
    /// that CA's store says of its `serial`; `None` when none of ours issued it. The TLS layer
    /// checks chains only: revocations are ours to check.
    pub(crate) async fn own_ca_standing(
        &self,
        cert_der: &[u8],
        serial: &str,
    ) -> Result<Option<(IssuerId, SerialStatus)>, ck_store::StoreError> {
        let issuer = self.issuers.all().into_iter().find_map(|(id, issuer)| match issuer {
            Issuer::Local(ca) if ca.issued(cert_der) => Some(id),
            _ => None,
        });
        let Some(issuer) = issuer else {
            return Ok(None);
        };
        let status = self.store.serial_status(issuer.as_str(), serial).await?;
        Ok(Some((issuer, status)))
    }

    /// The current CRL of a local CA issuer, signed anew when stale.
    pub async fn crl(&self, issuer: &str) -> Result<Arc<SignedCrl>, ServiceError> {
        let (id, ca) = self.local_ca(issuer, "a CRL")?;
        let slot = self.crls.slot(&id);
        let mut slot = slot.lock().await;
        let now = now();
        let refresh_after = self.config.crl_validity / 2;
        if let Some(current) = &slot.current
            && !slot.stale
            && now < current.this_update + refresh_after
        {
            return Ok(current.clone());
        }
        let revoked: Vec<RevokedSerial> = self
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
        let number = self.store.next_crl_number(id.as_str()).await?;
        let next_update = now + self.config.crl_validity;
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
    /// background, so the revocation is published without waiting for a request; the other
    /// nodes are told to do the same.
    pub(crate) async fn revoked_on(&self, issuer: &IssuerId) {
        if !matches!(self.issuers.known(issuer), Some(Issuer::Local(_))) {
            return;
        }
        let node = &self.config.node_id;
        if let Err(error) = self.store.publish_revoked(issuer.as_str(), node).await {
            tracing::warn!(%issuer, %error, "telling the other nodes about a revocation failed; their OCSP answers \
                and CRL catch up within an hour");
        }
        self.revoked_elsewhere(issuer).await;
    }

    /// Drops this node's OCSP answers and CRL of `issuer` after a revocation (here or on
    /// another node), and signs the next CRL in the background.
    pub(crate) async fn revoked_elsewhere(&self, issuer: &IssuerId) {
        if !matches!(self.issuers.known(issuer), Some(Issuer::Local(_))) {
            return;
        }
        self.forget_ocsp_responses(issuer);
        self.crls.slot(issuer).lock().await.stale = true;
        let pki = self.clone();
        let issuer = issuer.to_string();
        tokio::spawn(async move {
            if let Err(error) = pki.crl(&issuer).await {
                tracing::warn!(%issuer, %error, "signing the CRL after a revocation failed; the next request retries");
            }
        });
    }
}

/// How long a delegated OCSP responder certificate is valid; a new one is issued at half.
const OCSP_SIGNER_VALIDITY: time::Duration = time::Duration::days(7);
/// nextUpdate of OCSP responses.
const OCSP_RESPONSE_VALIDITY: time::Duration = time::Duration::hours(24);
/// A cached response is signed anew after this (or at once after a revocation).
const OCSP_REFRESH: time::Duration = time::Duration::hours(1);
/// Cached responses per issuer at most (about 1 KB each, so some 50 MB); beyond it the least
/// recently asked one goes. Only answers about certificates of ours are kept, so the bound is
/// reached by a large fleet, never by a client inventing CertIDs.
pub(crate) const OCSP_CACHE_CAPACITY: usize = 50_000;

struct CachedResponse {
    der: Arc<Vec<u8>>,
    this_update: OffsetDateTime,
}

/// Signed responses to single-certificate requests without a nonce (the common case:
/// browsers, stapling servers), so they are served without a signature.
///
/// Keyed by the whole CertID as the client encoded it (hash algorithm, issuer name and key
/// hashes, serial): a response echoes the CertID it answers, so it may only be reused for that
/// very CertID. Bounded in size (least recently used out first) and in age (`max_age`).
pub(crate) struct OcspCache {
    entries: hashlink::LruCache<Vec<u8>, CachedResponse>,
    max_age: time::Duration,
}

impl OcspCache {
    /// An empty cache of at most `capacity` responses, each served for at most `max_age`.
    pub(crate) fn new(capacity: usize, max_age: time::Duration) -> Self {
        Self {
            entries: hashlink::LruCache::new(capacity.max(1)),
            max_age,
        }
    }

    /// The response cached for `cert_id`, unless it is older than `max_age` (then it is dropped).
    pub(crate) fn get(&mut self, cert_id: &[u8], now: OffsetDateTime) -> Option<Arc<Vec<u8>>> {
        let cached = self.entries.get(cert_id)?;
        if now < cached.this_update + self.max_age {
            return Some(cached.der.clone());
        }
        self.entries.remove(cert_id);
        None
    }

    /// Keeps `der`, signed at `now`, as the answer for `cert_id` (evicting the least recently
    /// used answer when full).
    pub(crate) fn insert(&mut self, cert_id: Vec<u8>, der: Arc<Vec<u8>>, now: OffsetDateTime) {
        self.entries.insert(cert_id, CachedResponse { der, this_update: now });
    }

    /// How many responses are kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is kept.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

struct OcspIssuer {
    signer: Arc<OcspSigner>,
    cache: OcspCache,
}

/// Per issuer: the delegated responder and its cached responses.
#[derive(Default)]
struct OcspResponders {
    issuers: Mutex<HashMap<IssuerId, OcspIssuer>>,
}

impl OcspResponders {
    /// Cached OCSP responses, over every issuer (for the metrics).
    pub(crate) fn cached_responses(&self) -> usize {
        self.issuers
            .lock()
            .map_or(0, |issuers| issuers.values().map(|issuer| issuer.cache.len()).sum())
    }
}

/// What an OCSP request got: the DER response and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct OcspAnswer {
    /// The OCSPResponse, DER (an error status for bad requests: OCSP answers errors in band).
    pub der: Arc<Vec<u8>>,
    /// Served from the cache, without a signature.
    pub cached: bool,
}

impl Pki {
    /// Answers an OCSP request for a local CA issuer.
    pub async fn ocsp(&self, issuer: &str, request: &[u8]) -> Result<OcspAnswer, ServiceError> {
        let (id, ca) = self.local_ca(issuer, "an OCSP responder")?;
        let now = now();
        let signer = self.ocsp_signer(&id, &ca, now)?;
        let query = match signer.parse_request(request) {
            Ok(query) => query,
            Err(error) => {
                tracing::debug!(issuer = %id, %error, "malformed OCSP request");
                let der = ocsp_error_response(OcspErrorStatus::MalformedRequest);
                return Ok(OcspAnswer {
                    der: Arc::new(der),
                    cached: false,
                });
            }
        };
        // Only a CertID that names this issuer can have a cached answer: anything else is
        // `unknown`, signed each time and never kept.
        let cache_key = match query.certs.as_slice() {
            [cert] if query.nonce.is_none() && cert.ours => cert.cache_key(),
            _ => None,
        };
        if let Some(key) = &cache_key
            && let Some(der) = self.cached_ocsp(&id, key, now)
        {
            return Ok(OcspAnswer { der, cached: true });
        }
        let mut statuses = Vec::with_capacity(query.certs.len());
        for cert in &query.certs {
            statuses.push(if cert.ours {
                match self.store.serial_status(id.as_str(), &cert.serial_hex).await? {
                    SerialStatus::Issued => OcspStatus::Good,
                    SerialStatus::Revoked(r) => OcspStatus::Revoked {
                        at: r.revoked_at,
                        reason: r.reason,
                    },
                    SerialStatus::Unknown => OcspStatus::Unknown,
                }
            } else {
                OcspStatus::Unknown
            });
        }
        let der = signer
            .respond(
                &query.certs,
                &statuses,
                query.nonce.as_ref(),
                now,
                now + OCSP_RESPONSE_VALIDITY,
            )
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let der = Arc::new(der);
        // An unknown serial is not kept either: invented serials would fill the cache.
        if let Some(key) = cache_key
            && statuses.first().is_some_and(|status| *status != OcspStatus::Unknown)
            && let Ok(mut issuers) = self.ocsp.issuers.lock()
            && let Some(entry) = issuers.get_mut(&id)
            && Arc::ptr_eq(&entry.signer, &signer)
        {
            entry.cache.insert(key, der.clone(), now);
        }
        Ok(OcspAnswer { der, cached: false })
    }

    fn cached_ocsp(&self, id: &IssuerId, cert_id: &[u8], now: OffsetDateTime) -> Option<Arc<Vec<u8>>> {
        let mut issuers = self.ocsp.issuers.lock().ok()?;
        issuers.get_mut(id)?.cache.get(cert_id, now)
    }

    /// The issuer's delegated responder, issued (or rotated at half its validity) as needed.
    fn ocsp_signer(
        &self,
        id: &IssuerId,
        ca: &ck_pki::LocalCa,
        now: OffsetDateTime,
    ) -> Result<Arc<OcspSigner>, ServiceError> {
        let mut issuers = self
            .ocsp
            .issuers
            .lock()
            .map_err(|_| ServiceError::Unavailable("the OCSP state is poisoned".to_owned()))?;
        if let Some(entry) = issuers.get(id)
            && now < entry.signer.not_after() - OCSP_SIGNER_VALIDITY / 2
        {
            return Ok(entry.signer.clone());
        }
        let signer = Arc::new(
            ca.ocsp_signer(now, OCSP_SIGNER_VALIDITY)
                .map_err(|e| ServiceError::Unavailable(format!("issuing the OCSP responder certificate: {e}")))?,
        );
        tracing::info!(issuer = %id, not_after = %signer.not_after(), "issued a delegated OCSP responder certificate");
        issuers.insert(
            id.clone(),
            OcspIssuer {
                signer: signer.clone(),
                cache: OcspCache::new(OCSP_CACHE_CAPACITY, OCSP_REFRESH),
            },
        );
        Ok(signer)
    }

    /// Drops the issuer's cached OCSP responses (after a revocation).
    fn forget_ocsp_responses(&self, id: &IssuerId) {
        if let Ok(mut issuers) = self.ocsp.issuers.lock()
            && let Some(entry) = issuers.get_mut(id)
        {
            entry.cache.clear();
        }
    }
}

/// A TLS certificate for the server's own listener, signed by the local CA.
#[derive(Debug, Clone)]
pub struct ListenerCertificate {
    /// Leaf and intermediate, PEM.
    pub chain_pem: String,
    /// The key, PEM (PKCS#8).
    pub key_pem: ck_pki::PrivateKeyPem,
    /// The local CA's root, PEM: what clients trust, and what client certificates must chain to.
    pub root_pem: String,
    /// Expiry.
    pub not_after: OffsetDateTime,
}

impl Pki {
    /// Signs a certificate for the server's own TLS listener with the `local` CA (outside the
    /// inventory: it belongs to the server, not to a user).
    pub fn listener_certificate(
        &self,
        names: &[String],
        validity: time::Duration,
    ) -> Result<ListenerCertificate, ServiceError> {
        let Some(Issuer::Local(ca)) = self.issuers.known(&IssuerId::local()) else {
            return Err(ServiceError::Unavailable("the local CA is not loaded".to_owned()));
        };
        let sans = names
            .iter()
            .map(|n| {
                n.parse::<ck_domain::SubjectAltName>()
                    .map_err(|e| ServiceError::Invalid(format!("tls.auto_names: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = sans
            .first()
            .ok_or_else(|| ServiceError::Invalid("tls.auto_names is empty".to_owned()))?
            .to_string();
        let key = ck_pki::ServerKey::generate(ck_domain::KeyType::EcdsaP256, &sans)
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let now = now();
        let issued = ca
            .sign(
                &key.public_key_der,
                &ck_pki::LeafProfile {
                    common_name: first,
                    sans,
                    not_before: now - time::Duration::minutes(1),
                    not_after: now + validity,
                    client_auth: false,
                },
            )
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        Ok(ListenerCertificate {
            chain_pem: issued.chain_pem,
            key_pem: key.private_key,
            root_pem: ca.root_pem().to_owned(),
            not_after: issued.not_after,
        })
    }
}

impl Pki {
    /// The local CA's root and intermediate (PEM): what client certificates are verified
    /// against. The intermediate is included because clients usually send only their leaf.
    pub fn local_trust_anchors(&self) -> Result<String, ServiceError> {
        let Some(Issuer::Local(ca)) = self.issuers.known(&IssuerId::local()) else {
            return Err(ServiceError::Unavailable("the local CA is not loaded".to_owned()));
        };
        Ok(format!("{}{}", ca.root_pem(), ca.intermediate_pem()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{OCSP_CACHE_CAPACITY, OCSP_REFRESH, OcspCache};

    fn cert_id(n: u64) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn the_ocsp_cache_stays_within_its_bound_under_100k_distinct_cert_ids() {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let mut cache = OcspCache::new(OCSP_CACHE_CAPACITY, OCSP_REFRESH);
        let answer = Arc::new(vec![0x30, 0x03, 0x0a, 0x01, 0x00]);
        let legitimate = b"legitimate".to_vec();
        cache.insert(legitimate.clone(), answer.clone(), now);
        for n in 0..100_000 {
            // The legitimate CertID keeps being asked for, so it is never the least recent.
            if n % 1_000 == 0 {
                assert!(cache.get(&legitimate, now).is_some(), "evicted after {n} others");
            }
            cache.insert(cert_id(n), answer.clone(), now);
            assert!(cache.len() <= OCSP_CACHE_CAPACITY);
        }
        assert_eq!(cache.len(), OCSP_CACHE_CAPACITY);
        assert!(cache.get(&legitimate, now).is_some());
        assert!(
            cache.get(&cert_id(0), now).is_none(),
            "the least recently used went first"
        );
        assert!(cache.get(&cert_id(99_999), now).is_some());
    }

    #[test]
    fn an_ocsp_cache_entry_expires_with_age_and_keys_are_whole_cert_ids() {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let mut cache = OcspCache::new(4, OCSP_REFRESH);
        cache.insert(b"sha1|name|key|01".to_vec(), Arc::new(vec![1]), now);
        assert!(cache.get(b"sha256|name|key|01", now).is_none());
        assert!(
            cache
                .get(b"sha1|name|key|01", now + OCSP_REFRESH - time::Duration::SECOND)
                .is_some()
        );
        assert!(cache.get(b"sha1|name|key|01", now + OCSP_REFRESH).is_none());
        assert!(cache.is_empty(), "a stale answer is dropped when met");
    }
}
