//! The answers to http-01 and tls-alpn-01 challenges, shared by every order in flight, and the
//! tls-alpn-01 listener.
//!
//! One table serves all issuers and all listeners: the CA only ever asks for a token or a name
//! it was told about, and a token or name is unique to its pending authorization.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::AcmeFailure;

/// The ALPN protocol id of RFC 8737.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A boxed future, for the object-safe [`SharedHttp01`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where several servers behind one name keep their http-01 answers, so that whichever of them
/// the CA's validation request reaches can answer (a cluster's database, say).
pub trait SharedHttp01: Send + Sync + 'static {
    /// Publishes an answer; the order tells the CA to validate only after this succeeded.
    fn put<'a>(&'a self, token: &'a str, key_authorization: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// An answer another server published.
    fn get<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<String>>;
    /// Withdraws an answer once its order is over.
    fn remove<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()>;
}

/// Pending http-01 key authorizations by token, and tls-alpn-01 certificates by name.
#[derive(Clone, Default)]
pub struct ChallengeResponder {
    http01: Arc<RwLock<HashMap<String, String>>>,
    tls_alpn01: Arc<RwLock<HashMap<String, Arc<CertifiedKey>>>>,
    shared_http01: Option<Arc<dyn SharedHttp01>>,
}

impl std::fmt::Debug for ChallengeResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeResponder").finish_non_exhaustive()
    }
}

impl ChallengeResponder {
    /// A responder whose http-01 answers are also published to `shared`, and looked up there
    /// when this server did not make them.
    pub fn with_shared_http01(shared: Arc<dyn SharedHttp01>) -> Self {
        Self {
            shared_http01: Some(shared),
            ..Self::default()
        }
    }

    /// The key authorization to serve at `/.well-known/acme-challenge/<token>`, of an order of
    /// this server.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.http01.read().ok()?.get(token).cloned()
    }

    /// Like [`ChallengeResponder::http01`], then from the shared store (an order of another
    /// server).
    pub async fn http01_anywhere(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.http01(token) {
            return Some(answer);
        }
        match &self.shared_http01 {
            Some(shared) => shared.get(token).await,
            None => None,
        }
    }

    pub(crate) async fn add_http01(&self, token: &str, key_authorization: &str) -> Result<(), AcmeFailure> {
        if let Ok(mut map) = self.http01.write() {
            map.insert(token.to_owned(), key_authorization.to_owned());
        }
        if let Some(shared) = &self.shared_http01 {
            shared.put(token, key_authorization).await.map_err(|e| {
                AcmeFailure::local(
                    format!("publishing the http-01 answer to the other nodes failed: {e}"),
                    true,
                )
            })?;
        }
        Ok(())
    }

    pub(crate) async fn remove_http01(&self, token: &str) {
        if let Ok(mut map) = self.http01.write() {
            map.remove(token);
        }
        if let Some(shared) = &self.shared_http01 {
            shared.remove(token).await;
        }
    }

    /// The validation certificate for `name`, if an order waits on it.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01.read().ok()?.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Builds and publishes the RFC 8737 certificate for `name`: self-signed, SAN `name`, and
    /// the critical acmeIdentifier extension holding SHA-256 of the key authorization.
    pub(crate) fn add_tls_alpn01(&self, name: &str, key_authorization_digest: &[u8]) -> Result<(), AcmeFailure> {
        let fail =
            |e: &dyn std::fmt::Display| AcmeFailure::local(format!("building the tls-alpn-01 certificate: {e}"), false);
        let key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| fail(&e))?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_authorization_digest)];
        let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        // `CertifiedKey::from_der` would reject the critical acmeIdentifier extension, so the
        // signing key is loaded on its own.
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
            .map_err(|e| fail(&e))?;
        let certified = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key);
        if let Ok(mut map) = self.tls_alpn01.write() {
            map.insert(name.to_ascii_lowercase(), Arc::new(certified));
        }
        Ok(())
    }

    pub(crate) fn remove_tls_alpn01(&self, name: &str) {
        if let Ok(mut map) = self.tls_alpn01.write() {
            map.remove(&name.to_ascii_lowercase());
        }
    }
}

#[derive(Debug)]
struct AlpnResolver(ChallengeResponder);

impl ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Only validation handshakes are answered: this listener serves nothing else.
        let is_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !is_acme {
            return None;
        }
        self.0.tls_alpn01(hello.server_name()?)
    }
}

/// Answers tls-alpn-01 validation handshakes on `listener` until the task is dropped.
pub async fn serve_tls_alpn01(listener: TcpListener, responder: ChallengeResponder) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    {
        Ok(builder) => builder,
        Err(error) => {
            tracing::error!(%error, "tls-alpn-01 listener: TLS setup failed");
            return;
        }
    };
    let mut config = config
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AlpnResolver(responder)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "tls-alpn-01 listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // The validator closes after the handshake; a peer that stalls is cut off.
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(mut tls)) => {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "tls-alpn-01 handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls-alpn-01 handshake timed out"),
            }
        });
    }
}
