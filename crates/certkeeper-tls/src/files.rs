//! Certificates from PEM files, and a watcher that reloads them when they change on disk.
//!
//! The watcher watches the *directories* holding the files, not the files: writers that
//! replace a file by renaming a new one over it (the safe way to write certificates) give the
//! path a new inode, and a watch on the old inode would never hear of it. Kubernetes-style
//! symlink swaps (`..data`) in the same directory are seen the same way.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::broadcast;

use crate::cert::LoadedCert;
use crate::error::CertError;
use crate::store::CertStore;

/// How long the directories must stay quiet before a reload: a writer replacing the
/// certificate and then the key produces a burst of events and only the end state is wanted.
const DEBOUNCE: Duration = Duration::from_millis(150);

impl LoadedCert {
    /// Loads a PEM certificate chain and a PEM private key from two files (they may be the same file).
    ///
    /// # Errors
    ///
    /// [`CertError::Io`] naming the file that could not be read, and every error of
    /// [`LoadedCert::from_pem`].
    pub fn from_files(cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Result<Self, CertError> {
        let (cert_pem, key_pem) = read_pair(cert_path.as_ref(), key_path.as_ref())?;
        Self::from_pem(&cert_pem, &key_pem)
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> u64 {
    // Only detects "same bytes as last time" to skip pointless reloads; not a security check.
    let mut hasher = DefaultHasher::new();
    cert_pem.hash(&mut hasher);
    key_pem.hash(&mut hasher);
    hasher.finish()
}

/// What happened when the watched files changed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FileEvent {
    /// The new pair was loaded and is being served.
    Reloaded {
        /// The store id it was inserted under.
        id: String,
        /// End of validity of the new certificate.
        not_after: time::OffsetDateTime,
    },
    /// The new pair was refused; the previous certificate keeps being served.
    Rejected {
        /// The store id whose certificate was kept.
        id: String,
        /// Why the new pair was refused.
        error: Arc<CertError>,
    },
}

enum Message {
    Fs(notify::Result<Event>),
    Stop,
}

/// Keeps a certificate in a [`CertStore`] in step with a pair of PEM files.
///
/// Created by [`watch_files`]. Dropping it stops the watching; the certificate last loaded
/// stays in the store.
pub struct FileWatcher {
    _watcher: RecommendedWatcher,
    control: mpsc::Sender<Message>,
    events: broadcast::Sender<FileEvent>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher").finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// A receiver of reload outcomes from now on. Receivers that fall more than 16 events
    /// behind lose the oldest ones (see [`broadcast::error::RecvError::Lagged`]).
    pub fn events(&self) -> broadcast::Receiver<FileEvent> {
        self.events.subscribe()
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        // The reload thread may be inside a debounce wait; the message ends it at its next wake-up.
        let _ = self.control.send(Message::Stop);
    }
}

/// Loads the pair now, stores it under `id`, and reloads it whenever either file changes.
///
/// A reload that fails (unreadable file, key not matching, expired, ...) leaves the previous
/// certificate in place, logs a warning and sends [`FileEvent::Rejected`]; a successful one
/// replaces the certificate (with [`CertStore::insert`]: the files are the authority, including
/// on names) and sends [`FileEvent::Reloaded`]. Events are debounced by about 150 ms, and an
/// attempt on exactly the same input as the previous attempt is skipped silently, so each
/// change of the files is reported once.
///
/// Needs no async runtime: the watching runs on its own thread.
///
/// # Errors
///
/// Any error of [`LoadedCert::from_files`] for the initial load, or [`CertError::Watch`].
pub fn watch_files(
    store: Arc<CertStore>,
    id: &str,
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<FileWatcher, CertError> {
    let cert_path = absolute(cert_path.as_ref())?;
    let key_path = absolute(key_path.as_ref())?;
    let (cert_pem, key_pem) = read_pair(&cert_path, &key_path)?;
    let cert = LoadedCert::from_pem(&cert_pem, &key_pem)?;
    store.insert(id, cert)?;

    let (control, inbox) = mpsc::channel();
    let fs_sender = control.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = fs_sender.send(Message::Fs(event));
    })
    .map_err(|source| CertError::Watch {
        path: cert_path.clone(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = [&cert_path, &key_path]
        .iter()
        .filter_map(|path| path.parent().map(Path::to_path_buf))
        .collect();
    dirs.dedup();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| CertError::Watch {
                path: dir.clone(),
                source,
            })?;
    }

    let (events, _) = broadcast::channel(16);
    let reloader = Reloader {
        store,
        id: id.to_owned(),
        cert_path,
        key_path,
        last: fingerprint(&cert_pem, &key_pem),
        events: events.clone(),
    };
    std::thread::Builder::new()
        .name(format!("certkeeper-watch-{id}"))
        .spawn(move || reloader.run(&inbox))
        .map_err(|source| CertError::Io {
            path: dirs.first().cloned().unwrap_or_default(),
            source,
        })?;
    Ok(FileWatcher {
        _watcher: watcher,
        control,
        events,
    })
}

/// The event paths are absolute (built from the watched directory), so the files must be
/// compared and watched in absolute form too.
fn absolute(path: &Path) -> Result<PathBuf, CertError> {
    std::path::absolute(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

struct Reloader {
    store: Arc<CertStore>,
    id: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Fingerprint of the input of the last attempt, successful or not.
    last: u64,
    events: broadcast::Sender<FileEvent>,
}

impl Reloader {
    fn run(mut self, inbox: &mpsc::Receiver<Message>) {
        loop {
            match inbox.recv() {
                Ok(Message::Fs(event)) if relevant(&event) => {}
                Ok(Message::Fs(_)) => continue,
                Ok(Message::Stop) | Err(_) => return,
            }
            loop {
                match inbox.recv_timeout(DEBOUNCE) {
                    Ok(Message::Fs(_)) => continue,
                    Err(RecvTimeoutError::Timeout) => break,
                    Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            self.reload();
        }
    }

    fn reload(&mut self) {
        // Unrelated files in the same directory (a log file, say) also cause events; an
        // attempt on the same input as the previous one would only repeat its outcome.
        let (attempt, result) = match read_pair(&self.cert_path, &self.key_path) {
            Ok((cert_pem, key_pem)) => (
                fingerprint(&cert_pem, &key_pem),
                LoadedCert::from_pem(&cert_pem, &key_pem),
            ),
            Err(error) => (fingerprint(error.to_string().as_bytes(), b""), Err(error)),
        };
        if attempt == self.last {
            return;
        }
        self.last = attempt;
        match result {
            Ok(cert) => {
                let not_after = cert.not_after();
                if let Err(error) = self.store.insert(&self.id, cert) {
                    self.reject(error);
                    return;
                }
                tracing::info!(id = %self.id, %not_after, "reloaded certificate from files");
                let _ = self.events.send(FileEvent::Reloaded {
                    id: self.id.clone(),
                    not_after,
                });
            }
            Err(error) => self.reject(error),
        }
    }

    fn reject(&self, error: CertError) {
        tracing::warn!(id = %self.id, %error, "certificate files changed but were refused; keeping the current certificate");
        let _ = self.events.send(FileEvent::Rejected {
            id: self.id.clone(),
            error: Arc::new(error),
        });
    }
}

/// Reading the files ourselves produces open/close events; reacting to those would reload forever.
fn relevant(event: &notify::Result<Event>) -> bool {
    match event {
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        // A lost event (queue overflow) may hide a change: check the files.
        Err(_) => true,
    }
}
