//! [`CertStore`]: many certificates by id, one immutable snapshot published for readers.
//!
//! Readers (handshakes) load the current snapshot through `ArcSwap`, which never waits for a
//! writer. Writers take a mutex, build a complete new snapshot beside the old one and swap it
//! in; a handshake that already picked a certificate keeps its `Arc<CertifiedKey>`, and an
//! open connection never looks at the store again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::cert::LoadedCert;
use crate::error::CertError;
use crate::sni::NameIndex;

/// The ALPN protocol of the tls-alpn-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN_PROTOCOL: &[u8] = b"acme-tls/1";

/// A function answering tls-alpn-01 handshakes: given the client's server name, the
/// challenge certificate to present, or `None` to let normal selection happen.
pub type AcmeTlsAlpnLookup = Arc<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// What to serve when the client sends no server name, or one no certificate covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fallback {
    /// Abort the handshake (rustls sends an alert). The default: a client asking for a name
    /// this server does not have learns nothing about the names it does have.
    #[default]
    Refuse,
    /// Serve the certificate stored under this id. If no certificate has that id, refuse.
    Certificate(String),
}

/// Many certificates, selected per handshake by SNI, replaceable while the server runs.
///
/// `CertStore` implements rustls' [`ResolvesServerCert`], so an `Arc<CertStore>` goes straight
/// into [`rustls::ConfigBuilder::with_cert_resolver`]. Keep a clone of the `Arc` to change the
/// certificates later; every change is visible to the next handshake.
///
/// Writes rebuild the name index, so they cost O(total names); use
/// [`CertStore::insert_many`] for bulk loads. Lookups cost two hash probes at most,
/// whatever the number of certificates.
pub struct CertStore {
    current: ArcSwap<Snapshot>,
    /// Serializes writers so that two concurrent changes cannot build from the same snapshot and lose one.
    writer: Mutex<()>,
}

/// Everything a handshake needs, immutable once published.
struct Snapshot {
    certs: Arc<Certs>,
    fallback: Fallback,
    fallback_key: Option<Arc<CertifiedKey>>,
    acme: Option<AcmeTlsAlpnLookup>,
}

/// The certificates and their name index; shared between snapshots that differ only in
/// settings, so changing the fallback or the ACME hook does not rebuild the index.
struct Certs {
    by_id: HashMap<String, LoadedCert>,
    index: NameIndex<Arc<CertifiedKey>>,
}

impl Certs {
    /// Ties go to the certificate valid for longer (the renewed one, if an old copy lingers
    /// under another id), then to the smaller id, so the choice never depends on hash order.
    fn new(by_id: HashMap<String, LoadedCert>) -> Self {
        let mut ordered: Vec<(&String, &LoadedCert)> = by_id.iter().collect();
        ordered.sort_unstable_by(|(id_a, a), (id_b, b)| b.not_after().cmp(&a.not_after()).then_with(|| id_a.cmp(id_b)));
        let index = NameIndex::build(
            ordered
                .into_iter()
                .map(|(_, cert)| (cert.names(), Arc::clone(cert.certified_key()))),
        );
        Self { by_id, index }
    }
}

impl Snapshot {
    fn with_certs(&self, certs: Arc<Certs>) -> Self {
        Self::assemble(certs, self.fallback.clone(), self.acme.clone())
    }

    fn assemble(certs: Arc<Certs>, fallback: Fallback, acme: Option<AcmeTlsAlpnLookup>) -> Self {
        let fallback_key = match &fallback {
            Fallback::Refuse => None,
            Fallback::Certificate(id) => certs.by_id.get(id).map(|cert| Arc::clone(cert.certified_key())),
        };
        Self {
            certs,
            fallback,
            fallback_key,
            acme,
        }
    }

    fn resolve_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|name| self.certs.index.lookup(name))
            .or(self.fallback_key.as_ref())
            .cloned()
    }
}

impl CertStore {
    /// An empty store that refuses every handshake until certificates are inserted.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(Snapshot::assemble(
                Arc::new(Certs::new(HashMap::new())),
                Fallback::Refuse,
                None,
            )),
            writer: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a writer that panicked left nothing half-written behind.
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish_certs(&self, by_id: HashMap<String, LoadedCert>) {
        let certs = Arc::new(Certs::new(by_id));
        let next = self.current.load().with_certs(certs);
        self.current.store(Arc::new(next));
    }

    /// Inserts a certificate under `id`, replacing (and returning) the one stored there before.
    ///
    /// The certificate was validated when the [`LoadedCert`] was built; nothing else is checked.
    /// Use [`CertStore::update`] to also require that the names keep being covered.
    ///
    /// # Errors
    ///
    /// [`CertError::InvalidId`] for an empty id; the store is then unchanged.
    pub fn insert(&self, id: &str, cert: LoadedCert) -> Result<Option<LoadedCert>, CertError> {
        check_id(id)?;
        let _writer = self.lock();
        let mut by_id = self.current.load().certs.by_id.clone();
        let previous = by_id.insert(id.to_owned(), cert);
        self.publish_certs(by_id);
        Ok(previous)
    }

    /// Replaces the certificate under `id` after checking that the new one covers
    /// `required_names`, or, when `required_names` is empty, every name of the certificate it
    /// replaces. A renewal that silently drops a name is the mistake this catches.
    ///
    /// If nothing is stored under `id` and `required_names` is empty, the certificate is
    /// inserted without a names check.
    ///
    /// # Errors
    ///
    /// [`CertError::MissingNames`] or [`CertError::InvalidId`]; the previous certificate then
    /// keeps being served.
    pub fn update(&self, id: &str, cert: LoadedCert, required_names: &[&str]) -> Result<(), CertError> {
        check_id(id)?;
        let _writer = self.lock();
        let mut by_id = self.current.load().certs.by_id.clone();
        if required_names.is_empty() {
            if let Some(old) = by_id.get(id) {
                let old_names: Vec<&str> = old.names().iter().map(String::as_str).collect();
                cert.require_names(&old_names)?;
            }
        } else {
            cert.require_names(required_names)?;
        }
        by_id.insert(id.to_owned(), cert);
        self.publish_certs(by_id);
        Ok(())
    }

    /// Inserts or replaces many certificates with a single index rebuild. All or nothing: if
    /// one id is invalid, none is inserted.
    ///
    /// # Errors
    ///
    /// [`CertError::InvalidId`] for an empty id.
    pub fn insert_many(&self, items: impl IntoIterator<Item = (String, LoadedCert)>) -> Result<(), CertError> {
        let items: Vec<(String, LoadedCert)> = items.into_iter().collect();
        for (id, _) in &items {
            check_id(id)?;
        }
        let _writer = self.lock();
        let mut by_id = self.current.load().certs.by_id.clone();
        by_id.extend(items);
        self.publish_certs(by_id);
        Ok(())
    }

    /// Removes the certificate under `id`; returns whether there was one.
    pub fn remove(&self, id: &str) -> bool {
        let _writer = self.lock();
        let mut by_id = self.current.load().certs.by_id.clone();
        if by_id.remove(id).is_none() {
            return false;
        }
        self.publish_certs(by_id);
        true
    }

    /// Chooses what to serve when no certificate matches the client's server name.
    pub fn set_fallback(&self, fallback: Fallback) {
        let _writer = self.lock();
        let current = self.current.load();
        let next = Snapshot::assemble(Arc::clone(&current.certs), fallback, current.acme.clone());
        self.current.store(Arc::new(next));
    }

    /// The current fallback setting.
    pub fn fallback(&self) -> Fallback {
        self.current.load().fallback.clone()
    }

    /// The certificate stored under `id`.
    pub fn get(&self, id: &str) -> Option<LoadedCert> {
        self.current.load().certs.by_id.get(id).cloned()
    }

    /// The ids of all stored certificates, in no particular order.
    pub fn ids(&self) -> Vec<String> {
        self.current.load().certs.by_id.keys().cloned().collect()
    }

    /// The SNI rule exactly as handshakes use it (without the tls-alpn-01 hook): the
    /// certificate for this server name, else the fallback, else `None`.
    pub fn resolve_name(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.current.load().resolve_name(sni)
    }

    /// Number of stored certificates.
    pub fn len(&self) -> usize {
        self.current.load().certs.by_id.len()
    }

    /// True if no certificate is stored.
    pub fn is_empty(&self) -> bool {
        self.current.load().certs.by_id.is_empty()
    }

    /// Number of distinct names (exact and wildcard) the store can answer.
    pub fn name_count(&self) -> usize {
        self.current.load().certs.index.name_count()
    }

    /// Installs the tls-alpn-01 hook: when a client offers the ALPN protocol `acme-tls/1`,
    /// `lookup` is asked first with the client's server name; if it returns a certificate that
    /// one is served, otherwise normal selection happens.
    pub fn set_acme_tls_alpn(&self, lookup: AcmeTlsAlpnLookup) {
        self.replace_acme(Some(lookup));
    }

    /// Removes the tls-alpn-01 hook.
    pub fn clear_acme_tls_alpn(&self) {
        self.replace_acme(None);
    }

    fn replace_acme(&self, acme: Option<AcmeTlsAlpnLookup>) {
        let _writer = self.lock();
        let current = self.current.load();
        let next = Snapshot::assemble(Arc::clone(&current.certs), current.fallback.clone(), acme);
        self.current.store(Arc::new(next));
    }
}

/// An empty id could not be told apart from "no id" in configuration and logs.
fn check_id(id: &str) -> Result<(), CertError> {
    if id.is_empty() {
        Err(CertError::InvalidId)
    } else {
        Ok(())
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("CertStore")
            .field("certificates", &current.certs.by_id.len())
            .field("names", &current.certs.index.name_count())
            .field("fallback", &current.fallback)
            .field("acme_tls_alpn", &current.acme.is_some())
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.load();
        if let Some(acme) = &current.acme {
            let offers_acme = client_hello
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN_PROTOCOL));
            if offers_acme && let Some(key) = client_hello.server_name().and_then(|name| acme(name)) {
                return Some(key);
            }
        }
        let key = current.resolve_name(client_hello.server_name());
        if key.is_none() {
            tracing::debug!(server_name = ?client_hello.server_name(), "no certificate for server name; refusing handshake");
        }
        key
    }
}
