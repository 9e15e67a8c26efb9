//! An HTTPS server whose certificate comes from an ACME CA by itself, and renews by itself.
//!
//! ```text
//! scripts/start-pebble.sh /tmp/pebble && . /tmp/pebble/pebble/env.sh     # a local test CA
//! cargo run -p certkeeper-tls --example autocert_server -- \
//!     "$ACME_DIRECTORY_URL" "$PEBBLE_TLS_CA" app.example.com "$PEBBLE_HTTP_PORT" 8443 /tmp/autocert-cache
//! curl --cacert <(curl -sk "$PEBBLE_MGMT_URL/roots/0") --resolve app.example.com:8443:127.0.0.1 \
//!     https://app.example.com:8443/
//! ```
//!
//! Against Let's Encrypt: directory `letsencrypt`, no CA bundle (`-`), HTTP port 80, HTTPS
//! port 443, and a DNS name pointing at this machine. The HTTP port answers http-01 and
//! redirects everything else to HTTPS; the cache directory keeps the certificate, key and
//! account across restarts. Listens on 127.0.0.1 only, as an example should.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use certkeeper_tls::CertStore;
use certkeeper_tls::autocert::{ACME_TLS_ALPN, AutoCert, AutoCertConfig, AutoCertEvent, CertGroup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [directory, ca_bundle, domain, http_port, https_port, cache] = args.as_slice() else {
        eprintln!("usage: autocert_server DIRECTORY CA_BUNDLE_PEM|- DOMAIN HTTP_PORT HTTPS_PORT CACHE_DIR");
        std::process::exit(2);
    };
    let mut acme = serde_json::json!({ "directory": directory, "challenge": "http-01", "http01": { "via_api": true } });
    if ca_bundle != "-" {
        acme["ca_bundle_pem"] = std::fs::read_to_string(ca_bundle)?.into();
    }
    let group = CertGroup {
        name: "main".into(),
        domains: vec![domain.clone()],
        key_type: ck_domain::KeyType::EcdsaP256,
        acme,
    };
    let store = CertStore::new();
    let autocert = AutoCert::start(AutoCertConfig::new(cache, vec![group]), store)?;
    let mut events = autocert.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                AutoCertEvent::LoadedFromCache { not_after, .. } => {
                    eprintln!("serving the cached certificate (until {not_after})")
                }
                AutoCertEvent::Issued { not_after, renewal, .. } => {
                    eprintln!(
                        "{} certificate, valid until {not_after}",
                        if renewal { "renewed" } else { "new" }
                    )
                }
                AutoCertEvent::Failed { error, .. } => eprintln!("could not obtain the certificate: {error}"),
            }
        }
    });
    let _http = autocert.serve_http01(TcpListener::bind(("127.0.0.1", http_port.parse::<u16>()?)).await?);

    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(autocert.resolver());
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", https_port.parse::<u16>()?)).await?;
    eprintln!("https://{domain}:{https_port}/ (127.0.0.1)");
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut request = [0_u8; 1024];
            let _ = tls.read(&mut request).await;
            let body = "hello from an automatic certificate\n";
            let response = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}
