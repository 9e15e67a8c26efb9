//! Full TLS handshakes per second on loopback, with 1 and with 100k certificates loaded.
//!
//! A tokio-rustls server backed by a `CertStore` and a tokio-rustls client run in one process
//! on 127.0.0.1. Each iteration is a new TCP connection and a full TLS 1.3 handshake
//! (resumption disabled on both sides), finished when the client has read one byte the server
//! sent after its side of the handshake completed. The two stores serve the same certificate
//! for the same name; the 100k store holds 99 999 other real certificates besides.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeeper_tls::CertStore;
use common::{Minter, full_run};
use criterion::{BenchmarkId, Criterion};
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const NAME: &str = "bench.test";

async fn serve(store: Arc<CertStore>) -> SocketAddr {
    let mut config = ServerConfig::builder().with_no_client_auth().with_cert_resolver(store);
    // No tickets and no session cache: every handshake is a full one.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"k").await;
                    let _ = tls.flush().await;
                }
            });
        }
    });
    addr
}

async fn handshake(addr: SocketAddr, connector: &TlsConnector) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.unwrap();
}

fn main() {
    let others = if full_run() { 99_999 } else { 99 };
    let minter = Minter::new();
    let target = minter.leaf(0, &[NAME.to_owned()], true).loaded();
    let started = Instant::now();
    let filler: Vec<_> = (0..others)
        .map(|i| {
            let cert = minter.leaf(i as u64 + 1, &[format!("h{i}.test")], false).loaded();
            (format!("cert-{i}"), cert)
        })
        .collect();
    eprintln!("minted and loaded {others} certificates in {:.1?}", started.elapsed());

    let one = CertStore::new();
    one.insert("target", target.clone()).unwrap();
    let many = CertStore::new();
    many.insert_many(filler.into_iter().chain([("target".to_owned(), target)]))
        .unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(minter.ca_der()).unwrap();
    let mut client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(client));

    let runtime = Runtime::new().unwrap();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let mut group = criterion.benchmark_group("full_handshake");
    for (count, store) in [(1, one), (many.len(), many)] {
        let addr = runtime.block_on(serve(store));
        group.bench_function(BenchmarkId::new("loopback", count), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        handshake(addr, &connector).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    criterion.final_summary();
}
