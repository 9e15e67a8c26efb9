//! The HTTPS listener: rustls, with optional client certificates verified against the local CA;
//! a verified client leaf reaches the API as a request extension (`ck_api::ClientCertificate`),
//! which EST re-enrollment needs. Written on hyper-util directly because axum's `serve` has no
//! TLS and the TLS crates built on it do not hand the peer certificate to handlers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;

/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A rustls server configuration for `chain_pem`/`key_pem` that asks for (but does not require)
/// a client certificate issued under one of `client_anchors_pem`.
pub(crate) fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_anchors_pem: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the TLS certificate file is not PEM certificates")?;
    anyhow::ensure!(!chain.is_empty(), "the TLS certificate file holds no certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("the TLS key file is not a PEM private key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_anchors_pem.as_bytes()) {
        roots.add(cert.context("the local CA")?).context("the local CA")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the TLS key does not match its certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections until `shutdown` turns true; each connection is served on its own
/// task (connections in progress finish on their own).
/// Serves `app` over TLS. The configuration is read from `config` at every connection, so a
/// renewed listener certificate takes effect for new connections without a restart.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    config: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    app: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // The guard `wait_for` returns is not Send: drop it inside.
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return Ok(()),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.borrow().clone());
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| ck_api::ClientCertificate(leaf.to_vec()));
            let service = app.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                if let Some(client) = &client {
                    request.extensions_mut().insert(client.clone());
                }
                request
            });
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
