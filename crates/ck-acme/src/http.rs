//! The HTTPS client under instant-acme: system roots plus an issuer's extra CA bundle, a record
//! of the last `Retry-After` so rate limits can be honoured, and a record of the alternate
//! chains a certificate download offers.
//!
//! instant-acme turns an error response into a problem document and drops the headers, and it
//! downloads only the default chain, so `Retry-After` and `Link: rel="alternate"` are captured
//! here, on their way through.
//!
//! Every answer is read here, whole but at most [`MAX_BODY_BYTES`], within the request's
//! timeout: a directory URL is chosen by whoever adds an issuer, so its server must not be able
//! to make us buffer without bound or wait forever. A request that never got an answer fails
//! with a [`TransportError`] that says what failed (name resolution, connection, TLS and the
//! certificate verifier's reason, timeout) and never that the CA refused anything.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode, header::RETRY_AFTER};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::AcmeFailure;

/// The largest answer read from an ACME server. Directory, orders and problem documents are a
/// few KiB, a certificate chain some tens; 1 MiB leaves room for long chains and nothing more.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one request may take, answer included: a stalled CA must not hold a job forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to an ACME server that got no usable answer: what was asked and what failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub(crate) struct TransportError {
    url: String,
    reason: String,
}

impl TransportError {
    fn new(url: &str, reason: impl Into<String>) -> Self {
        Self {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }

    /// A failed exchange with `url`, named by the deepest cause in `error`'s source chain.
    fn from_client_error(url: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(url, describe_transport_failure(error))
    }

    fn timeout(url: &str) -> Self {
        Self::new(
            url,
            format!(
                "the server did not answer within {} s (timeout; the CA may be down or unreachable)",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
    }

    fn too_large(url: &str) -> Self {
        Self::new(
            url,
            format!(
                "the answer is larger than {} MiB, the cap on ACME answers; this is not an ACME server's answer",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        )
    }
}

/// One line saying why a request got no answer, from the causes in `error`'s source chain: a
/// TLS failure (with the certificate verifier's reason), a refused or unreachable connection, a
/// name that does not resolve, a timeout. hyper's own message ("client error (Connect)") says
/// none of that, so the chain is walked down to the I/O and rustls errors.
pub(crate) fn describe_transport_failure(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut cause: Option<String> = None;
    let mut current = Some(error);
    while let Some(err) = current {
        let text = err.to_string();
        if !text.is_empty() && !messages.iter().any(|m| m == &text) {
            messages.push(text);
        }
        if cause.is_none() {
            cause = classify(err);
        }
        // io::Error::source skips the error it wraps (its Display is that error's), so step into
        // the wrapped error itself: that is where rustls' error travels (twice wrapped).
        current = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    let chain = messages.join(": ");
    match cause {
        Some(cause) => format!("{cause} (the CA was never reached; {chain})"),
        None => format!("the request failed before any answer: {chain}"),
    }
}

/// What kind of failure `err` is, when it says.
fn classify(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(match tls {
            rustls::Error::InvalidCertificate(reason) => format!(
                "TLS: the CA's server certificate was refused by the certificate verifier: {reason:?} \
                 (check the issuer's CA bundle, and that the server presents a leaf certificate for its name)"
            ),
            other => format!("TLS handshake failed: {other}"),
        });
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind;
        let kind = match io.kind() {
            ErrorKind::ConnectionRefused => "connection refused (nothing listens at that address and port)",
            ErrorKind::TimedOut => "connection timed out",
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "the connection was reset",
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "host or network unreachable",
            ErrorKind::AddrNotAvailable => "the address is not available",
            _ => return None,
        };
        return Some(kind.to_owned());
    }
    let text = err.to_string();
    if text == "dns error" || text.contains("failed to lookup address") {
        return Some("DNS: the CA's host name does not resolve".to_owned());
    }
    None
}

type Inner =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, BodyWrapper<Bytes>>;

/// Where the last `Retry-After` of a 429 or 503 is kept (shared by one issuer's requests).
#[derive(Clone, Default, Debug)]
pub(crate) struct RetryAfterSlot(Arc<Mutex<Option<SystemTime>>>);

impl RetryAfterSlot {
    /// The recorded time, if it is still in the future.
    pub(crate) fn get(&self) -> Option<SystemTime> {
        let slot = self.0.lock().ok()?;
        slot.filter(|at| *at > SystemTime::now())
    }

    fn set(&self, at: SystemTime) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(at);
        }
    }
}

/// `Link: rel="alternate"` targets by the URL of the response that carried them.
#[derive(Clone, Default, Debug)]
pub(crate) struct AlternateLinks(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl AlternateLinks {
    /// The alternates offered by the response of `url`, forgotten once taken.
    pub(crate) fn take(&self, url: &str) -> Vec<String> {
        self.0
            .lock()
            .ok()
            .and_then(|mut map| map.remove(url))
            .unwrap_or_default()
    }

    fn record(&self, url: String, links: Vec<String>) {
        if let Ok(mut map) = self.0.lock() {
            // Bounded: entries are taken right after the download; stale ones must not pile up.
            if map.len() > 1024 {
                map.clear();
            }
            map.insert(url, links);
        }
    }
}

#[derive(Clone)]
pub(crate) struct AcmeHttpClient {
    inner: Inner,
    retry_after: RetryAfterSlot,
    pub(crate) alternates: AlternateLinks,
}

impl AcmeHttpClient {
    /// A client trusting the system's roots and the certificates of `extra_roots_pem`.
    pub(crate) fn new(extra_roots_pem: Option<&str>, retry_after: RetryAfterSlot) -> Result<Self, AcmeFailure> {
        let mut roots = rustls::RootCertStore::empty();
        // A machine without a system store can still reach a private CA given by bundle.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_roots_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| AcmeFailure::local(format!("the CA bundle is not valid PEM: {e}"), false))?;
                roots.add(cert).map_err(|e| {
                    AcmeFailure::local(format!("the CA bundle holds an unusable certificate: {e}"), false)
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(AcmeFailure::local(
                    "the CA bundle holds no certificate: give a PEM file with BEGIN CERTIFICATE blocks",
                    false,
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeFailure::local(format!("TLS setup failed: {e}"), false))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            // HTTP/1.1 only: all orders of a node multiplexed on one HTTP/2 connection stall
            // together when it does (seen under load against Pebble: every request waited for
            // the 30 s timeout); separate connections fail one at a time.
            .enable_http1()
            .build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            inner,
            retry_after,
            alternates: AlternateLinks::default(),
        })
    }

    /// Sends a request outside instant-acme (alternate chain downloads).
    pub(crate) async fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), String> {
        exchange(&self.inner, req).await.map_err(|e| e.to_string())
    }
}

/// Sends `req` and reads the whole answer (at most [`MAX_BODY_BYTES`]) within
/// [`REQUEST_TIMEOUT`].
async fn exchange(
    inner: &Inner,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<(http::response::Parts, Bytes), TransportError> {
    use http_body_util::BodyExt;
    let url = req.uri().to_string();
    let fut = async {
        let rsp = inner
            .request(req)
            .await
            .map_err(|e| TransportError::from_client_error(&url, &e))?;
        let (parts, body) = rsp.into_parts();
        let body = http_body_util::Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    TransportError::too_large(&url)
                } else {
                    TransportError::from_client_error(&url, &*e)
                }
            })?
            .to_bytes();
        Ok((parts, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| TransportError::timeout(&url))?
}

/// The targets of `Link: <url>;rel="alternate"` headers (RFC 8288), in order.
pub(crate) fn alternate_links(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter(|link| {
            link.split(';')
                .skip(1)
                .any(|param| matches!(param.trim(), "rel=\"alternate\"" | "rel=alternate"))
        })
        .filter_map(|link| {
            let link = link.trim();
            let start = link.find('<')? + 1;
            let end = link.find('>')?;
            link.get(start..end).map(str::to_owned)
        })
        .collect()
}

impl HttpClient for AcmeHttpClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        let inner = self.inner.clone();
        let slot = self.retry_after.clone();
        let alternates = self.alternates.clone();
        Box::pin(async move {
            let (parts, body) = exchange(&inner, req)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp = http::Response::from_parts(parts, http_body_util::Full::new(body));
            if matches!(
                rsp.status(),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) && let Some(at) = rsp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
            {
                slot.set(at);
            }
            let links = alternate_links(rsp.headers());
            if !links.is_empty() {
                alternates.record(url, links);
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(SystemTime::now() + Duration::from_secs(seconds.min(86_400)));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = time::PrimitiveDateTime::parse(value, format).ok()?.assume_utc();
    Some(SystemTime::from(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_links_are_parsed() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::LINK, "<https://ca/dir>;rel=\"index\"".parse().unwrap());
        headers.append(
            http::header::LINK,
            "<https://ca/cert/1/1>;rel=\"alternate\"".parse().unwrap(),
        );
        headers.append(
            http::header::LINK,
            "<https://ca/cert/1/2>; rel=alternate, <https://ca/x>;rel=\"up\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            alternate_links(&headers),
            ["https://ca/cert/1/1", "https://ca/cert/1/2"]
        );
    }

    fn get(url: &str) -> Request<BodyWrapper<Bytes>> {
        Request::get(url).body(BodyWrapper::default()).unwrap()
    }

    /// A TLS server on loopback presenting `cert` (with `key`), answering `body` to one request.
    async fn tls_server(
        cert: CertificateDer<'static>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        body: Vec<u8>,
    ) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buffer = [0_u8; 4096];
                let _ = tls.read(&mut buffer).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    fn certificate(is_ca: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if is_ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        (params.self_signed(&key).unwrap(), key)
    }

    #[tokio::test]
    async fn a_ca_certificate_as_server_certificate_is_named_as_a_tls_failure() {
        let (cert, key) = certificate(true);
        let port = tls_server(
            cert.der().clone(),
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            b"{}".to_vec(),
        )
        .await;
        let client = AcmeHttpClient::new(Some(&cert.pem()), RetryAfterSlot::default()).unwrap();
        let error = client
            .send(get(&format!("https://localhost:{port}/dir")))
            .await
            .unwrap_err();
        assert!(error.contains("TLS") && error.contains("CaUsedAsEndEntity"), "{error}");
        assert!(
            error.contains("never reached") && !error.contains("refused the"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn refused_connections_and_unknown_names_are_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = AcmeHttpClient::new(None, RetryAfterSlot::default()).unwrap();
        let refused = client
            .send(get(&format!("https://127.0.0.1:{port}/dir")))
            .await
            .unwrap_err();
        assert!(refused.contains("connection refused"), "{refused}");
        let unknown = client.send(get("https://no-such-host.invalid/dir")).await.unwrap_err();
        assert!(unknown.contains("DNS"), "{unknown}");
    }

    #[tokio::test]
    async fn answers_above_the_cap_are_refused() {
        let (cert, key) = certificate(false);
        let port = tls_server(
            cert.der().clone(),
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            vec![b'x'; MAX_BODY_BYTES + 1],
        )
        .await;
        let client = AcmeHttpClient::new(Some(&cert.pem()), RetryAfterSlot::default()).unwrap();
        let error = client
            .send(get(&format!("https://localhost:{port}/dir")))
            .await
            .unwrap_err();
        assert!(error.contains("larger than 1 MiB"), "{error}");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let at = parse_retry_after("120").unwrap();
        let delta = at.duration_since(SystemTime::now()).unwrap();
        assert!(delta > Duration::from_secs(100) && delta <= Duration::from_secs(120));
        let date = parse_retry_after("Fri, 31 Dec 2038 23:59:59 GMT").unwrap();
        assert!(date > SystemTime::now());
        assert!(parse_retry_after("soon").is_none());
    }
}
