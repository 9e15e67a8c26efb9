//! Automatic certificates from an ACME CA for the server that embeds this crate.
//!
//! An [`AutoCert`] keeps certificate *groups* (a main one and extras, each with its own names,
//! key type and ACME settings) valid in a [`CertStore`]:
//!
//! - On start, each group's cached certificate (in the cache directory) is published at once if
//!   it is still valid: a failing CA never keeps a server from serving what it has.
//! - A background task obtains missing certificates and renews each at a fraction of its
//!   lifetime (or inside the CA's ARI window when the CA offers one).
//! - A failed attempt writes a marker file; until the cooldown has passed no new attempt is
//!   made for that group, also across restarts, so a crash loop cannot hammer the CA.
//!   [`AutoCert::force_renew`] bypasses the cooldown.
//! - tls-alpn-01 is answered in-process by the same store (add [`ACME_TLS_ALPN`] to the server's
//!   ALPN protocols); http-01 answers come from [`AutoCert::http01_answer`].
//! - Optional on-demand issuance for unknown SNI names ([`OnDemand`]), off by default.
//!
//! Groups with the same directory share one ACME account, kept in the cache directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ck_acme::{AcmeIssuer, AcmeIssuerConfig, ChallengeResponder, OrderRequest};
use ck_domain::{KeyType, SubjectAltName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::{Notify, broadcast};

use crate::{CertError, CertStore, LoadedCert};

/// The ALPN protocol id of tls-alpn-01 (RFC 8737): add it to `ServerConfig::alpn_protocols`.
pub use crate::ACME_TLS_ALPN_PROTOCOL as ACME_TLS_ALPN;

/// One certificate to keep valid.
#[derive(Debug, Clone)]
pub struct CertGroup {
    /// The group's name: its id in the store and the stem of its cache files.
    pub name: String,
    /// The names it covers (the first is the subject); `*.example.com` needs dns-01.
    pub domains: Vec<String>,
    /// Key algorithm of the certificate's key, generated here and never sent anywhere.
    pub key_type: KeyType,
    /// The CA and how to answer its challenges, as JSON (the fields of
    /// `POST /api/v1/issuers`' `acme`: `directory`, `email`, `eab`, `ca_bundle_pem`,
    /// `challenge`, `dns01`, `profile`, `preferred_chain`).
    pub acme: serde_json::Value,
}

/// Issuance for SNI names no group covers, decided per name by `ask`. Off unless configured.
///
/// **Abuse risk:** anyone who can reach the server chooses the SNI name. Without a strict
/// `ask` (say, a lookup in your customer table), a scanner makes you request certificates for
/// arbitrary names until the CA's rate limits lock you out. The rate limit only bounds the
/// damage.
#[derive(Clone)]
pub struct OnDemand {
    /// Whether a certificate may be requested for this (normalised) name.
    pub ask: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// At most this many on-demand orders per minute.
    pub per_minute: u32,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

/// Settings of an [`AutoCert`].
#[derive(Debug, Clone)]
pub struct AutoCertConfig {
    /// Where certificates, keys (0600), the account and failure markers are kept.
    pub cache_dir: PathBuf,
    /// The certificates to keep valid.
    pub groups: Vec<CertGroup>,
    /// Renew after this fraction of the lifetime [default 2/3].
    pub renew_at_fraction: f64,
    /// After a failure, no new attempt for this long (unless forced) [default 1 h].
    pub failure_cooldown: Duration,
    /// How often the scheduler looks at the groups [default 30 s].
    pub check_interval: Duration,
    /// On-demand issuance for unknown names [default off].
    pub on_demand: Option<OnDemand>,
}

impl AutoCertConfig {
    /// Defaults around a cache directory and groups.
    pub fn new(cache_dir: impl Into<PathBuf>, groups: Vec<CertGroup>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            groups,
            renew_at_fraction: 2.0 / 3.0,
            failure_cooldown: Duration::from_secs(3600),
            check_interval: Duration::from_secs(30),
            on_demand: None,
        }
    }
}

/// What happened to a group; subscribe with [`AutoCert::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoCertEvent {
    /// A valid cached certificate was published at start.
    LoadedFromCache {
        /// Group name.
        group: String,
        /// Its expiry.
        not_after: OffsetDateTime,
    },
    /// A new certificate was obtained (first issuance or renewal) and is being served.
    Issued {
        /// Group name.
        group: String,
        /// Its expiry.
        not_after: OffsetDateTime,
        /// Whether it replaced an earlier one.
        renewal: bool,
    },
    /// An attempt failed; the next one waits for the cooldown.
    Failed {
        /// Group name.
        group: String,
        /// Why.
        error: String,
    },
}

/// Why [`AutoCert::start`] refused the configuration.
#[derive(Debug, thiserror::Error)]
pub enum AutoCertError {
    /// A setting is wrong; the message names it.
    #[error("autocert: {0}")]
    Config(String),
    /// The cache directory is not usable.
    #[error("autocert cache {path}: {source}")]
    Cache {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

struct Group {
    spec: CertGroup,
    config: AcmeIssuerConfig,
    names: Vec<SubjectAltName>,
}

struct Shared {
    store: Arc<CertStore>,
    responder: ChallengeResponder,
    cache_dir: PathBuf,
    renew_at_fraction: f64,
    failure_cooldown: Duration,
    check_interval: Duration,
    groups: Mutex<BTreeMap<String, Arc<Group>>>,
    /// Renewal times, by group.
    renew_at: Mutex<HashMap<String, OffsetDateTime>>,
    /// Groups to renew now, cooldown or not.
    forced: Mutex<HashSet<String>>,
    wake: Notify,
    events: broadcast::Sender<AutoCertEvent>,
    /// One account per directory, shared by the groups that use it.
    accounts: tokio::sync::Mutex<HashMap<String, String>>,
    on_demand: Option<OnDemand>,
    on_demand_state: Mutex<OnDemandState>,
}

#[derive(Default)]
struct OnDemandState {
    window_start: Option<std::time::Instant>,
    in_window: u32,
}

/// Keeps the configured certificates valid in a [`CertStore`]. Dropping it stops the
/// background task; the store keeps serving what it has.
pub struct AutoCert {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AutoCert {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for AutoCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoCert")
            .field("cache_dir", &self.shared.cache_dir)
            .finish_non_exhaustive()
    }
}

impl AutoCert {
    /// Checks the settings, publishes every valid cached certificate into `store`, wires
    /// tls-alpn-01 into it, and starts obtaining and renewing in the background. Needs a tokio
    /// runtime.
    pub fn start(config: AutoCertConfig, store: Arc<CertStore>) -> Result<Self, AutoCertError> {
        std::fs::create_dir_all(&config.cache_dir).map_err(|source| AutoCertError::Cache {
            path: config.cache_dir.clone(),
            source,
        })?;
        restrict_dir(&config.cache_dir);
        if !(config.renew_at_fraction > 0.0 && config.renew_at_fraction < 1.0) {
            return Err(AutoCertError::Config(
                "renew_at_fraction must be between 0 and 1".into(),
            ));
        }
        let mut groups = BTreeMap::new();
        for spec in &config.groups {
            let group = Self::check_group(spec)?;
            if groups.insert(spec.name.clone(), Arc::new(group)).is_some() {
                return Err(AutoCertError::Config(format!("two groups are named `{}`", spec.name)));
            }
        }
        let (events, _) = broadcast::channel(64);
        let responder = ChallengeResponder::default();
        let alpn = responder.clone();
        store.set_acme_tls_alpn(Arc::new(move |name: &str| alpn.tls_alpn01(name)));
        let shared = Arc::new(Shared {
            store,
            responder,
            cache_dir: config.cache_dir,
            renew_at_fraction: config.renew_at_fraction,
            failure_cooldown: config.failure_cooldown,
            check_interval: config.check_interval,
            groups: Mutex::new(groups),
            renew_at: Mutex::new(HashMap::new()),
            forced: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            events,
            accounts: tokio::sync::Mutex::new(HashMap::new()),
            on_demand: config.on_demand,
            on_demand_state: Mutex::new(OnDemandState::default()),
        });
        let names: Vec<String> = lock(&shared.groups).keys().cloned().collect();
        for name in names {
            shared.load_cached(&name);
        }
        let task = tokio::spawn(run(shared.clone()));
        Ok(Self { shared, task })
    }

    fn check_group(spec: &CertGroup) -> Result<Group, AutoCertError> {
        if spec.name.is_empty()
            || !spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AutoCertError::Config(format!(
                "group name `{}` must be letters, digits, `-` or `_` (it names cache files)",
                spec.name
            )));
        }
        if spec.domains.is_empty() {
            return Err(AutoCertError::Config(format!("group `{}` has no domains", spec.name)));
        }
        let names = spec
            .domains
            .iter()
            .map(|d| SubjectAltName::parse(d).map_err(|e| AutoCertError::Config(format!("group `{}`: {e}", spec.name))))
            .collect::<Result<Vec<_>, _>>()?;
        let config = AcmeIssuerConfig::from_json(&spec.acme)
            .map_err(|e| AutoCertError::Config(format!("group `{}`: {}", spec.name, e.message)))?;
        Ok(Group {
            spec: spec.clone(),
            config,
            names,
        })
    }

    /// Renews `group` now, even during a failure cooldown. Unknown groups are ignored.
    pub fn force_renew(&self, group: &str) {
        lock(&self.shared.forced).insert(group.to_owned());
        self.shared.wake.notify_one();
    }

    /// Events of every group from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AutoCertEvent> {
        self.shared.events.subscribe()
    }

    /// The http-01 answer for a request path (`/.well-known/acme-challenge/<token>`), for the
    /// server's plain-HTTP listener on port 80: answer 200 with this body, else 404.
    pub fn http01_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix("/.well-known/acme-challenge/")?;
        self.shared.responder.http01(token)
    }

    /// The ready-made http-01 handler: serves `listener` (the CA connects to port 80) until the
    /// task is dropped, answering `/.well-known/acme-challenge/<token>` and redirecting every
    /// other request to `https://` on the same host.
    ///
    /// It reads just the request line, which is all a challenge needs: a hand-written loop
    /// instead of an HTTP framework keeps this crate free of one for every server embedding it.
    pub fn serve_http01(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let responder = self.shared.responder.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let responder = responder.clone();
                tokio::spawn(async move {
                    // A client that sends nothing is cut off.
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer_http01(stream, responder)).await;
                });
            }
        })
    }

    /// A resolver for the server: the store's, plus on-demand issuance for unknown names when
    /// configured (the first handshake for a new name fails; later ones get the certificate).
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(AutoCertResolver {
            shared: self.shared.clone(),
        })
    }

    /// The store the certificates are published in.
    pub fn store(&self) -> &Arc<CertStore> {
        &self.shared.store
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data behind.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct AutoCertResolver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for AutoCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let found = ResolvesServerCert::resolve(&*self.shared.store, hello);
        if found.is_none()
            && let Some(name) = sni
        {
            self.shared.on_demand(&name);
        }
        found
    }
}

impl Shared {
    fn group(&self, name: &str) -> Option<Arc<Group>> {
        lock(&self.groups).get(name).cloned()
    }

    fn paths(&self, group: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.cache_dir.join(format!("{group}.crt")),
            self.cache_dir.join(format!("{group}.key")),
            self.cache_dir.join(format!("{group}.failed")),
        )
    }

    /// Publishes the cached certificate of `name` if it is valid and covers the names.
    fn load_cached(&self, name: &str) {
        let Some(group) = self.group(name) else {
            return;
        };
        let (cert_path, key_path, _) = self.paths(name);
        let (Ok(chain), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) else {
            return;
        };
        let loaded = LoadedCert::from_pem(&chain, &key).and_then(|cert| {
            let wanted: Vec<&str> = group.spec.domains.iter().map(String::as_str).collect();
            cert.require_names(&wanted).map(|()| cert)
        });
        match loaded {
            Ok(cert) => {
                let not_after = cert.not_after();
                self.schedule(name, &cert);
                if let Err(error) = self.store.insert(name, cert) {
                    tracing::warn!(group = name, %error, "cached certificate not published");
                    return;
                }
                tracing::info!(group = name, %not_after, "serving the cached certificate");
                let _ = self.events.send(AutoCertEvent::LoadedFromCache {
                    group: name.to_owned(),
                    not_after,
                });
            }
            Err(error) => tracing::info!(group = name, %error, "cached certificate unusable; obtaining a new one"),
        }
    }

    fn schedule(&self, name: &str, cert: &LoadedCert) {
        let lifetime = cert.not_after() - cert.not_before();
        let at = cert.not_before() + lifetime * self.renew_at_fraction;
        lock(&self.renew_at).insert(name.to_owned(), at);
    }

    /// Whether the group's last failure is recent enough to wait: reads the marker file, so
    /// the cooldown holds across restarts.
    fn cooling_down(&self, name: &str) -> bool {
        let (_, _, marker) = self.paths(name);
        let Ok(modified) = std::fs::metadata(&marker).and_then(|m| m.modified()) else {
            return false;
        };
        modified
            .elapsed()
            .map(|age| age < self.failure_cooldown)
            .unwrap_or(true)
    }

    fn due(&self) -> Vec<(String, bool)> {
        let now = OffsetDateTime::now_utc();
        let forced: HashSet<String> = std::mem::take(&mut *lock(&self.forced));
        let renew_at = lock(&self.renew_at).clone();
        lock(&self.groups)
            .keys()
            .filter_map(|name| {
                let force = forced.contains(name);
                let due = renew_at.get(name).is_none_or(|at| *at <= now);
                (force || (due && !self.cooling_down(name))).then(|| (name.clone(), force))
            })
            .collect()
    }

    async fn obtain(self: &Arc<Self>, name: &str) {
        let Some(group) = self.group(name) else {
            return;
        };
        let renewal = self.store.get(name).is_some();
        match self.order(&group).await {
            Ok(cert) => {
                let not_after = cert.not_after();
                self.schedule(name, &cert);
                if let Err(error) = self.store.insert(name, cert) {
                    self.failed(name, format!("publishing the new certificate: {error}"));
                    return;
                }
                let (_, _, marker) = self.paths(name);
                let _ = std::fs::remove_file(marker);
                tracing::info!(group = name, %not_after, renewal, "certificate issued");
                let _ = self.events.send(AutoCertEvent::Issued {
                    group: name.to_owned(),
                    not_after,
                    renewal,
                });
            }
            Err(error) => self.failed(name, error),
        }
    }

    fn failed(&self, name: &str, error: String) {
        let (_, _, marker) = self.paths(name);
        let stamp = format!("{} {error}\n", OffsetDateTime::now_utc().unix_timestamp());
        if let Err(io) = write_private(&marker, stamp.as_bytes()) {
            tracing::warn!(group = name, error = %io, "cannot write the failure marker");
        }
        tracing::warn!(group = name, %error, cooldown = ?self.failure_cooldown, "obtaining the certificate failed");
        let _ = self.events.send(AutoCertEvent::Failed {
            group: name.to_owned(),
            error,
        });
    }

    /// One ACME order for `group`: key and CSR here, certificate from the CA, both cached.
    async fn order(self: &Arc<Self>, group: &Group) -> Result<LoadedCert, String> {
        let acme = self.account(&group.config).await?;
        let (key_type, names) = (group.spec.key_type, group.names.clone());
        let key = tokio::task::spawn_blocking(move || ck_pki::ServerKey::generate(key_type, &names))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let csr_der = ck_pki::pem_block_der(&key.csr_pem, "CERTIFICATE REQUEST").map_err(|e| e.to_string())?;
        let replaces = self
            .store
            .get(&group.spec.name)
            .and_then(|cert| cert.certified_key().cert.first().map(|c| c.to_vec()));
        let issued = acme
            .order(&OrderRequest {
                names: &group.spec.domains,
                csr_der: &csr_der,
                challenge: None,
                replaces: replaces.as_deref(),
            })
            .await
            .map_err(|e| e.message)?;
        let key_pem = key.private_key.expose().to_owned();
        let cert = LoadedCert::from_pem(issued.chain_pem.as_bytes(), key_pem.as_bytes())
            .map_err(|e: CertError| e.to_string())?;
        let (cert_path, key_path, _) = self.paths(&group.spec.name);
        write_private(&key_path, key_pem.as_bytes()).map_err(|e| format!("caching the key: {e}"))?;
        write_private(&cert_path, issued.chain_pem.as_bytes()).map_err(|e| format!("caching the certificate: {e}"))?;
        if let Some(leaf) = cert.certified_key().cert.first()
            && let Ok(Some(window)) = acme.renewal_window(leaf).await
        {
            let now = OffsetDateTime::now_utc();
            let at = ck_domain::renew_within_window(window.start, window.end, now, 0.5);
            lock(&self.renew_at).insert(group.spec.name.clone(), at);
        }
        Ok(cert)
    }

    /// The account for `config`'s directory: restored from the cache, or registered and cached.
    async fn account(&self, config: &AcmeIssuerConfig) -> Result<AcmeIssuer, String> {
        let directory = config.directory_url();
        let mut accounts = self.accounts.lock().await;
        let path = self.cache_dir.join(format!("account-{}.json", fnv_hex(&directory)));
        let credentials = match accounts.get(&directory) {
            Some(credentials) => Some(credentials.clone()),
            None => std::fs::read_to_string(&path).ok(),
        };
        if let Some(credentials) = credentials {
            let issuer = AcmeIssuer::restore(config.clone(), &credentials, self.responder.clone())
                .await
                .map_err(|e| e.message)?;
            accounts.insert(directory, credentials);
            return Ok(issuer);
        }
        let registered = AcmeIssuer::register(config.clone(), self.responder.clone())
            .await
            .map_err(|e| e.message)?;
        write_private(&path, registered.credentials_json.as_bytes())
            .map_err(|e| format!("caching the account: {e}"))?;
        tracing::info!(account = %registered.account_url, %directory, "registered the ACME account");
        accounts.insert(directory, registered.credentials_json);
        Ok(registered.issuer)
    }

    /// An unknown SNI name: if `ask` allows it and the rate limit has room, a group is added
    /// for it and obtained in the background.
    fn on_demand(self: &Arc<Self>, name: &str) {
        let Some(policy) = &self.on_demand else {
            return;
        };
        let Some(template) = lock(&self.groups).values().next().cloned() else {
            return;
        };
        let group_name = format!("on-demand_{}", name.replace(['.', '*'], "_"));
        {
            let mut state = lock(&self.on_demand_state);
            if self.group(&group_name).is_some() {
                return;
            }
            let now = std::time::Instant::now();
            if state
                .window_start
                .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(60))
            {
                state.window_start = Some(now);
                state.in_window = 0;
            }
            if state.in_window >= policy.per_minute {
                tracing::warn!(name, "on-demand issuance rate limit reached; name refused");
                return;
            }
            if !(policy.ask)(name) {
                tracing::info!(name, "on-demand issuance refused by `ask`");
                return;
            }
            state.in_window += 1;
        }
        let Ok(san) = SubjectAltName::parse(name) else {
            return;
        };
        let group = Group {
            spec: CertGroup {
                name: group_name.clone(),
                domains: vec![name.to_owned()],
                key_type: template.spec.key_type,
                acme: template.spec.acme.clone(),
            },
            config: template.config.clone(),
            names: vec![san],
        };
        // The scheduler obtains it (and renews it later) like any group; one place orders.
        lock(&self.groups).insert(group_name, Arc::new(group));
        self.wake.notify_one();
    }
}

async fn answer_http01(mut stream: tokio::net::TcpStream, responder: ChallengeResponder) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0_u8; 8192];
    let mut len = 0;
    // Up to the end of the headers (or 8 KiB): the path and the Host header are all we use.
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let host = request
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let response = match path.strip_prefix("/.well-known/acme-challenge/") {
        Some(token) => match responder.http01(token) {
            Some(body) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        },
        None if !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) => {
            let host = host.split(':').next().unwrap_or_default();
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: https://{host}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        }
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn run(shared: Arc<Shared>) {
    loop {
        for (name, forced) in shared.due() {
            if forced {
                tracing::info!(group = %name, "forced renewal");
            }
            shared.obtain(&name).await;
        }
        tokio::select! {
            () = tokio::time::sleep(shared.check_interval) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// A short stable name for a directory URL (FNV-1a; not a security property, only a file name).
fn fnv_hex(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}
