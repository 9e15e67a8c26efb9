//! The HTTPS client under instant-acme: system roots plus an issuer's extra CA bundle, a record
//! of the last `Retry-After` so rate limits can be honoured, and a record of the alternate
//! chains a certificate download offers.
//!
//! instant-acme turns an error response into a problem document and drops the headers, and it
//! downloads only the default chain, so `Retry-After` and `Link: rel="alternate"` are captured
//! here, on their way through.

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
        use http_body_util::BodyExt;
        let rsp = tokio::time::timeout(Duration::from_secs(30), self.inner.request(req))
            .await
            .map_err(|_| "the CA did not answer within 30 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts, body))
    }
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
        let fut = self.inner.request(req);
        let slot = self.retry_after.clone();
        let alternates = self.alternates.clone();
        Box::pin(async move {
            // A stalled CA must not hold a job forever.
            let rsp = tokio::time::timeout(Duration::from_secs(30), fut)
                .await
                .map_err(|_| instant_acme::Error::Str("the CA did not answer within 30 s"))?
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
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
