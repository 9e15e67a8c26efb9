//! The last certificates and chains this node read, served during a database outage (see the
//! cluster service's outage module): metadata and chains, never keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ck_domain::{Certificate, CertificateId, CertificateVersion};

/// At most this many certificates (and as many chains) are kept for outages.
const MAX_CACHED: usize = 100_000;

/// The last certificates and chains this node read, for reads during an outage.
pub(crate) struct ReadCache {
    max_age: Duration,
    certificates: Mutex<HashMap<CertificateId, (Instant, Certificate)>>,
    versions: Mutex<HashMap<(CertificateId, u32), (Instant, CertificateVersion)>>,
}

impl ReadCache {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            certificates: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn keep_certificate(&self, cert: &Certificate) {
        if self.max_age.is_zero() {
            return;
        }
        if let Ok(mut map) = self.certificates.lock() {
            keep(&mut map, cert.id, cert.clone());
        }
    }

    pub(crate) fn keep_version(&self, version: &CertificateVersion) {
        if self.max_age.is_zero() {
            return;
        }
        if let Ok(mut map) = self.versions.lock() {
            // Only what a chain read needs: a cached version never carries a private key.
            keep(&mut map, (version.certificate_id, version.version), version.clone());
        }
    }

    pub(crate) fn certificate(&self, id: CertificateId) -> Option<Certificate> {
        let map = self.certificates.lock().ok()?;
        fresh(map.get(&id), self.max_age)
    }

    pub(crate) fn version(&self, id: CertificateId, number: u32) -> Option<CertificateVersion> {
        let map = self.versions.lock().ok()?;
        fresh(map.get(&(id, number)), self.max_age)
    }
}

fn keep<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, (Instant, V)>, key: K, value: V) {
    if map.len() >= MAX_CACHED && !map.contains_key(&key) {
        // Full: make room by dropping what no longer could be served anyway.
        let now = Instant::now();
        map.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(60));
        if map.len() >= MAX_CACHED {
            return;
        }
    }
    map.insert(key, (Instant::now(), value));
}

fn fresh<V: Clone>(entry: Option<&(Instant, V)>, max_age: Duration) -> Option<V> {
    entry.filter(|(at, _)| at.elapsed() <= max_age).map(|(_, v)| v.clone())
}
