//! The file watcher: pairs replaced by atomic rename are served within seconds; a bad pair is
//! reported as `Rejected` and the old certificate keeps being served.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use certkeeper_tls::{CertError, CertStore, FileEvent, LoadedCert, watch_files};
use common::{Ca, Leaf, serve, served_serial, verifying_client};
use tokio::sync::broadcast;

/// Writes a temporary file in the same directory and renames it over `path`, as careful writers do.
fn replace_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_pair(dir: &Path, leaf: &Leaf, key_pem: &str) {
    // Key first, certificate last: the order the manual recommends.
    replace_atomically(&dir.join("tls.key"), key_pem);
    replace_atomically(&dir.join("tls.crt"), &leaf.cert_pem);
}

async fn next_event(events: &mut broadcast::Receiver<FileEvent>) -> FileEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("no watcher event within 5 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_pair_is_served_and_bad_pair_is_rejected() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(1, &["files.test"]);
    write_pair(dir.path(), &first, &first.key_pem);

    let store = CertStore::new();
    let watcher = watch_files(
        store.clone(),
        "files",
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    )
    .unwrap();
    let mut events = watcher.events();
    let addr = serve(store.clone()).await;
    let client = verifying_client(&ca, &[]);
    assert_eq!(served_serial(addr, &client, Some("files.test")).await.unwrap(), 1);

    let second = ca.leaf(2, &["files.test"]);
    let written = Instant::now();
    write_pair(dir.path(), &second, &second.key_pem);
    loop {
        let serial = served_serial(addr, &client, Some("files.test")).await.unwrap();
        if serial == 2 {
            break;
        }
        assert_eq!(serial, 1);
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "new pair not served within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(next_event(&mut events).await, FileEvent::Reloaded { id, .. } if id == "files"));

    // A certificate with somebody else's key: refused, reported, and the old pair stays.
    let third = ca.leaf(3, &["files.test"]);
    write_pair(dir.path(), &third, &ca.leaf(4, &["files.test"]).key_pem);
    match next_event(&mut events).await {
        FileEvent::Rejected { id, error } => {
            assert_eq!(id, "files");
            assert!(matches!(*error, CertError::KeyMismatch), "{error:?}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(served_serial(addr, &client, Some("files.test")).await.unwrap(), 2);

    // Garbage is refused the same way.
    replace_atomically(&dir.path().join("tls.crt"), "not a certificate");
    assert!(matches!(next_event(&mut events).await, FileEvent::Rejected { .. }));
    assert_eq!(served_serial(addr, &client, Some("files.test")).await.unwrap(), 2);

    // Other files in the directory (a log, say) do not repeat the last outcome.
    std::fs::write(dir.path().join("server.log"), "noise").unwrap();
    std::fs::write(dir.path().join("server.log"), "more noise").unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(600), events.recv()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");

    // Fixing the files recovers without restarting anything.
    write_pair(dir.path(), &third, &third.key_pem);
    assert!(matches!(next_event(&mut events).await, FileEvent::Reloaded { .. }));
    assert_eq!(served_serial(addr, &client, Some("files.test")).await.unwrap(), 3);

    // After the watcher is dropped, changes on disk are no longer picked up.
    drop(watcher);
    let fourth = ca.leaf(5, &["files.test"]);
    write_pair(dir.path(), &fourth, &fourth.key_pem);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_serial(addr, &client, Some("files.test")).await.unwrap(), 3);
}

#[test]
fn initial_load_errors_are_returned() {
    let dir = tempfile::tempdir().unwrap();
    let store = CertStore::new();
    let missing = watch_files(
        store.clone(),
        "x",
        dir.path().join("nope.crt"),
        dir.path().join("nope.key"),
    );
    assert!(matches!(missing, Err(CertError::Io { ref path, .. }) if path.ends_with("nope.crt")));
    let from_files = LoadedCert::from_files(dir.path().join("nope.crt"), dir.path().join("nope.key"));
    assert!(matches!(from_files, Err(CertError::Io { .. })));
    assert!(store.is_empty());
}
