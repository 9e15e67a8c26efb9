//! certkeeper-tls fed by the control plane: a rustls server takes its certificate from the
//! real `certkeeper serve` and picks up a renewal without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper_tls::CertStore;
use certkeeper_tls::control_plane::{ManagedCert, keep_current, load};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::Server;

async fn handshake_serial(port: u16, name: &str, root_pem: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), stream)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .trim_start_matches("00")
        .to_owned()
}

#[test]
fn a_rustls_server_serves_and_follows_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let created: Value =
        serde_json::from_str(&server.cli_ok(&["cert", "create", "lib.internal", "--wait", "--json"])).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let root = server.cli_ok(&["issuer", "ca"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = CertStore::new();
        let client = server.client();
        let cert = ManagedCert {
            id: id.clone(),
            key_pem: None,
        };
        load(&client, &store, &cert).await.unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        let first = handshake_serial(port, "lib.internal", &root).await;
        assert_eq!(first, created["serial"].as_str().unwrap().trim_start_matches("00"));

        let _sync = keep_current(client, store.clone(), vec![cert], Duration::from_millis(200));
        let renewed: Value = serde_json::from_str(&server.cli_ok(&["cert", "renew", &id, "--wait", "--json"])).unwrap();
        let new_serial = renewed["serial"].as_str().unwrap().trim_start_matches("00").to_owned();
        assert_ne!(new_serial, first);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if handshake_serial(port, "lib.internal", &root).await == new_serial {
                break;
            }
            assert!(Instant::now() < deadline, "the renewal never reached the TLS server");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
