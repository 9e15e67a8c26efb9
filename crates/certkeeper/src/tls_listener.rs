//! The listeners, HTTP and HTTPS: rustls, with optional client certificates verified against the
//! local CA; a verified client leaf reaches the API as a request extension
//! (`ck_api::ClientCertificate`), which EST re-enrollment needs. Written on hyper-util directly
//! because axum's `serve` has no TLS, the TLS crates built on it do not hand the peer
//! certificate to handlers, and neither sets a header timeout.
//!
//! Both listeners bound what a client that sends slowly or nothing can hold (slowloris): a
//! connection must complete a request head within the header timeout (of its accept, and, for
//! HTTP/1.1, of hyper starting to read each head), is closed after the idle timeout without a
//! request in flight or a byte moved, and at most `max_connections` are open at once (the rest
//! wait in the kernel's backlog). A TLS handshake has its own timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What one client may hold, for both listeners (`listener:` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A request head (first line and headers) must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight that moves no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// A TLS handshake that takes longer is dropped.
    pub tls_handshake_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 4096,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// How long a stopping server waits for its connections' requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

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

/// Serves `app` on `listener` until `shutdown` turns true, over TLS when `tls` is given (its
/// configuration is read at every connection, so a renewed listener certificate takes effect
/// for new connections without a restart). Each connection runs on its own task; at shutdown
/// they finish their requests (at most `SHUTDOWN_GRACE`) before this returns.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>>,
    app: Router,
    limits: ListenerLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // A slot first: at the limit, new connections wait in the backlog rather than being
        // accepted and starved.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return Ok(()),
            },
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        };
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
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        };
        let acceptor = tls
            .as_ref()
            .map(|config| tokio_rustls::TlsAcceptor::from(config.borrow().clone()));
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(stream, peer, None, app, limits, shutdown).await,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
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
                    serve_connection(tls, peer, client, app, limits, shutdown).await;
                }
            }
        });
    }
    // Every slot back means every connection has ended.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    Ok(())
}

/// What a connection's watchdog reads: when a byte last moved, how many requests are in
/// flight and how many have started.
struct Activity {
    opened: Instant,
    /// Milliseconds since `opened` of the last byte read or written, or request finished.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ListenerLimits) -> Option<&'static str> {
        let age = self.opened.elapsed();
        if self.started.load(Ordering::Relaxed) == 0 && age >= limits.header_read_timeout {
            return Some("no request head within the header timeout");
        }
        let idle = age.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        (self.in_flight.load(Ordering::Relaxed) == 0 && idle >= limits.idle_timeout).then_some("idle")
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A connection's socket (or TLS stream) that records when bytes move.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, its watchdog closes it, or the
/// server stops (then in-flight requests finish first).
async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    client: Option<ck_api::ClientCertificate>,
    app: Router,
    limits: ListenerLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let requests = activity.clone();
    let service = tower::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        if let Some(client) = &client {
            request.extensions_mut().insert(client.clone());
        }
        let in_flight = InFlight::enter(&requests);
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    // The watchdog looks a few times per timeout, so a connection goes at most a quarter late.
    let period = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut watchdog = tokio::time::interval(period);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = watchdog.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(%peer, why, "closing the connection");
                    return;
                }
            }
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; }, if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
