//! A minimal HTTPS server whose certificate is reloaded from disk while it runs.
//!
//! ```text
//! cargo run -p certkeeper-tls --example hot_reload_server -- cert.pem key.pem [port]
//! curl -k https://127.0.0.1:8443/
//! ```
//!
//! Replace `cert.pem` and `key.pem` (ideally by writing a temporary file and renaming it over
//! the old one) and the next connection gets the new certificate; a bad pair is logged and
//! the old certificate stays. The server answers every request with a short HTTP/1.0 page
//! naming the certificate's validity, and listens on 127.0.0.1 only.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use certkeeper_tls::{CertStore, Fallback, FileEvent, watch_files};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert_path), Some(key_path)) = (args.next(), args.next()) else {
        eprintln!("usage: hot_reload_server CERT_PEM KEY_PEM [PORT]");
        std::process::exit(2);
    };
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(8443);

    let store = CertStore::new();
    let watcher = watch_files(store.clone(), "main", &cert_path, &key_path)?;
    // Clients connecting by IP address send no server name; serve them the one certificate too.
    store.set_fallback(Fallback::Certificate("main".into()));

    let mut events = watcher.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                FileEvent::Reloaded { not_after, .. } => eprintln!("reloaded; new certificate valid until {not_after}"),
                FileEvent::Rejected { error, .. } => {
                    eprintln!("refused new files, still serving the old pair: {error}")
                }
                other => eprintln!("{other:?}"),
            }
        }
    });

    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on https://{}", listener.local_addr()?);

    loop {
        let (tcp, peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    eprintln!("{peer}: handshake failed: {err}");
                    return;
                }
            };
            // Read until the end of the request head; the request itself does not matter.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = match store.get("main") {
                Some(cert) => format!(
                    "hello from certkeeper-tls; certificate valid until {}\n",
                    cert.not_after()
                ),
                None => "hello from certkeeper-tls\n".to_owned(),
            };
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}
