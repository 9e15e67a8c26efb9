//! The autocert manager against a real Pebble: obtains and serves (http-01 through the
//! ready-made answer, tls-alpn-01 through the store's own resolver), renews short-lived
//! certificates, restarts from its cache with the CA unreachable, and keeps the failure
//! cooldown across a restart unless forced.

#![cfg(feature = "acme")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certkeeper_tls::CertStore;
use certkeeper_tls::autocert::{ACME_TLS_ALPN, AutoCert, AutoCertConfig, AutoCertEvent, CertGroup, OnDemand};
use ck_domain::KeyType;
use ck_test_peers::pebble::{Pebble, PebbleOptions};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

fn group(name: &str, domain: &str, pebble: &Pebble, challenge: &str) -> CertGroup {
    CertGroup {
        name: name.to_owned(),
        domains: vec![domain.to_owned()],
        key_type: KeyType::EcdsaP256,
        acme: serde_json::json!({
            "directory": pebble.directory_url(),
            "email": "ops@example.com",
            "ca_bundle_pem": pebble.tls_ca_pem(),
            "challenge": challenge,
            // The listeners are the application's here: no listener of ck-acme's own.
            "http01": { "via_api": true },
        }),
    }
}

/// The application's plain-HTTP listener: the manager's ready-made http-01 handler.
async fn serve_http01(port: u16, autocert: &AutoCert) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let _task = autocert.serve_http01(listener);
}

/// The application's TLS listener on `port`, resolving through `resolver` (tls-alpn-01 too).
async fn serve_tls(port: u16, resolver: Arc<dyn rustls::server::ResolvesServerCert>) {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
}

/// A full handshake (no resumption) as `name`, trusting only Pebble's root; the leaf's serial.
async fn served_serial(port: u16, name: &str, root: &Path) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), stream)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    Ok(parsed.raw_serial_as_string())
}

async fn next_event(
    events: &mut broadcast::Receiver<AutoCertEvent>,
    group: &str,
    within: Duration,
) -> Option<AutoCertEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(event)) => {
                let of_group = match &event {
                    AutoCertEvent::LoadedFromCache { group: g, .. }
                    | AutoCertEvent::Issued { group: g, .. }
                    | AutoCertEvent::Failed { group: g, .. } => g == group,
                };
                if of_group {
                    return Some(event);
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => return None,
        }
    }
}

fn quick(config: &mut AutoCertConfig) {
    config.check_interval = Duration::from_millis(200);
    config.renew_at_fraction = 0.5;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obtains_serves_renews_and_restarts_from_cache() {
    let options = PebbleOptions {
        validity_seconds: Some(20),
        ..PebbleOptions::default()
    };
    let Some(pebble) = Pebble::start(options, "autocert_renewal") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let tls_port = ck_test_peers::free_port();
    let store = CertStore::new();
    let mut config = AutoCertConfig::new(cache.path(), vec![group("main", "app.example.com", &pebble, "http-01")]);
    quick(&mut config);
    let autocert = Arc::new(AutoCert::start(config.clone(), store.clone()).unwrap());
    let mut events = autocert.subscribe();
    serve_http01(pebble.http_port(), &autocert).await;
    serve_tls(tls_port, autocert.resolver()).await;

    let first = next_event(&mut events, "main", Duration::from_secs(60)).await;
    assert!(
        matches!(first, Some(AutoCertEvent::Issued { renewal: false, .. })),
        "{first:?}"
    );
    let serial = served_serial(tls_port, "app.example.com", pebble.issuer_root_pem_path())
        .await
        .unwrap();
    // The key is cached with mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cache.path().join("main.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Half of a 20 s lifetime later it renews on its own, and the new one is served.
    let renewed = next_event(&mut events, "main", Duration::from_secs(40)).await;
    assert!(
        matches!(renewed, Some(AutoCertEvent::Issued { renewal: true, .. })),
        "{renewed:?}"
    );
    let serial2 = served_serial(tls_port, "app.example.com", pebble.issuer_root_pem_path())
        .await
        .unwrap();
    assert_ne!(serial, serial2);

    // Restart with the CA unreachable: the cached certificate is served at once.
    drop(events);
    drop(autocert);
    let store2 = CertStore::new();
    let mut dead = config.clone();
    dead.groups[0].acme["directory"] =
        serde_json::json!(format!("https://127.0.0.1:{}/dir", ck_test_peers::free_port()));
    let restarted = AutoCert::start(dead, store2.clone()).unwrap();
    let port2 = ck_test_peers::free_port();
    serve_tls(port2, restarted.resolver()).await;
    assert_eq!(
        served_serial(port2, "app.example.com", pebble.issuer_root_pem_path())
            .await
            .unwrap(),
        serial2,
        "the cached certificate is served while the CA is unreachable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_in_process_and_the_failure_cooldown() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "autocert_alpn") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let store = CertStore::new();
    // "broken" uses http-01 but nothing answers on Pebble's http port: it must fail.
    let groups = vec![
        group("alpn", "alpn.example.com", &pebble, "tls-alpn-01"),
        group("broken", "broken.example.com", &pebble, "http-01"),
    ];
    let mut config = AutoCertConfig::new(cache.path(), groups);
    quick(&mut config);
    let autocert = AutoCert::start(config.clone(), store.clone()).unwrap();
    let mut events = autocert.subscribe();
    // The application's own TLS port is where Pebble validates tls-alpn-01.
    serve_tls(pebble.tls_port(), autocert.resolver()).await;

    let issued = next_event(&mut events, "alpn", Duration::from_secs(60)).await;
    assert!(matches!(issued, Some(AutoCertEvent::Issued { .. })), "{issued:?}");
    served_serial(pebble.tls_port(), "alpn.example.com", pebble.issuer_root_pem_path())
        .await
        .unwrap();
    let failed = next_event(&mut events, "broken", Duration::from_secs(60)).await;
    assert!(matches!(failed, Some(AutoCertEvent::Failed { .. })), "{failed:?}");
    assert!(cache.path().join("broken.failed").exists(), "failure marker written");
    let accounts = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("account-")
        })
        .count();
    assert_eq!(accounts, 1, "groups of one directory share one account");

    // Restart: the marker holds the cooldown (1 h), so no new attempt for "broken"…
    drop(events);
    drop(autocert);
    let restarted = AutoCert::start(config, CertStore::new()).unwrap();
    let mut events = restarted.subscribe();
    let quiet = next_event(&mut events, "broken", Duration::from_secs(3)).await;
    assert_eq!(quiet, None, "no attempt during the cooldown");
    // …until forced.
    restarted.force_renew("broken");
    let forced = next_event(&mut events, "broken", Duration::from_secs(60)).await;
    assert!(matches!(forced, Some(AutoCertEvent::Failed { .. })), "{forced:?}");
}

/// On-demand issuance: a name `ask` allows gets a certificate after its first handshake
/// triggers the order; a name it refuses never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_issuance_asks_first() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "autocert_on_demand") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let mut config = AutoCertConfig::new(
        cache.path(),
        vec![group("main", "main.example.com", &pebble, "http-01")],
    );
    quick(&mut config);
    config.on_demand = Some(OnDemand {
        ask: Arc::new(|name: &str| name.ends_with(".customers.example.com")),
        per_minute: 5,
    });
    let autocert = Arc::new(AutoCert::start(config, CertStore::new()).unwrap());
    let mut events = autocert.subscribe();
    serve_http01(pebble.http_port(), &autocert).await;
    let tls_port = ck_test_peers::free_port();
    serve_tls(tls_port, autocert.resolver()).await;
    let root = pebble.issuer_root_pem_path();

    assert!(
        served_serial(tls_port, "shop.customers.example.com", root)
            .await
            .is_err(),
        "first handshake: no certificate yet"
    );
    let issued = next_event(
        &mut events,
        "on-demand_shop_customers_example_com",
        Duration::from_secs(60),
    )
    .await;
    assert!(matches!(issued, Some(AutoCertEvent::Issued { .. })), "{issued:?}");
    served_serial(tls_port, "shop.customers.example.com", root)
        .await
        .unwrap();

    assert!(served_serial(tls_port, "evil.example.net", root).await.is_err());
    let none = next_event(&mut events, "on-demand_evil_example_net", Duration::from_secs(2)).await;
    assert_eq!(none, None, "a name `ask` refuses is never ordered");
    assert!(served_serial(tls_port, "evil.example.net", root).await.is_err());
}
