//! SNI lookup latency with 10, 1k and 100k certificates, for an exact name, a wildcard match
//! and a miss, against rustls' own `ResolvesServerCertUsingSni` as the baseline.
//!
//! Every store holds N real, distinct certificates with one name each (one in ten is a
//! wildcard `*.wK.test`, the rest `hK.test`). Both resolvers are driven through the real
//! trait, `ResolvesServerCert::resolve`, with real ClientHellos captured by
//! `rustls::server::Acceptor`; `CertStore::resolve_name` (the same rule without a
//! ClientHello) is measured too. Queries cycle through 256 different names so that the
//! measurement is not one hot cache line.
//!
//! rustls' resolver knows no wildcards: for the wildcard case it is given the exact names
//! queried, each registered with the wildcard certificate that covers it (its `add` checks
//! coverage), which is the best it can do.

#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use certkeeper_tls::CertStore;
use common::{Minter, full_run};
use criterion::{BenchmarkId, Criterion};
use rustls::server::{Accepted, Acceptor, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::ServerName;

const QUERIES: usize = 256;

fn name_of(i: usize) -> String {
    if i.is_multiple_of(10) {
        format!("*.w{i}.test")
    } else {
        format!("h{i}.test")
    }
}

/// A real ClientHello for `name`, parsed by rustls and ready to hand to a resolver.
fn client_hello(config: &Arc<ClientConfig>, name: &str) -> Accepted {
    let mut client = ClientConnection::new(config.clone(), ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let mut acceptor = Acceptor::default();
    acceptor.read_tls(&mut &wire[..]).unwrap();
    acceptor.accept().ok().unwrap().unwrap()
}

fn main() {
    let sizes: &[usize] = if full_run() { &[10, 1_000, 100_000] } else { &[10, 100] };
    let largest = *sizes.iter().max().unwrap();
    let started = std::time::Instant::now();
    let minter = Minter::new();
    let certs: Vec<_> = (0..largest)
        .map(|i| minter.leaf(i as u64 + 1, &[name_of(i)], false).loaded())
        .collect();
    eprintln!("minted and loaded {largest} certificates in {:.1?}", started.elapsed());

    let client_config = Arc::new(
        ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    );

    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    for &n in sizes {
        let store = CertStore::new();
        store
            .insert_many((0..n).map(|i| (format!("cert-{i}"), certs[i].clone())))
            .unwrap();

        // Spread the queries over the whole store.
        let step = n.div_ceil(QUERIES).max(1);
        let exact_ids: Vec<usize> = (0..n)
            .step_by(step)
            .filter(|i| !i.is_multiple_of(10))
            .cycle()
            .take(QUERIES)
            .collect();
        let wild_ids: Vec<usize> = (0..n).step_by(10).cycle().take(QUERIES).collect();
        let exact: Vec<String> = exact_ids.iter().map(|&i| format!("h{i}.test")).collect();
        let wildcard: Vec<String> = wild_ids.iter().map(|&i| format!("x{}.w{i}.test", i % 7)).collect();
        let miss: Vec<String> = (0..QUERIES).map(|i| format!("m{i}.nowhere.test")).collect();

        let mut baseline = ResolvesServerCertUsingSni::new();
        for i in (0..n).filter(|i| !i.is_multiple_of(10)) {
            baseline
                .add(&format!("h{i}.test"), (**certs[i].certified_key()).clone())
                .unwrap();
        }
        for (name, &i) in wildcard.iter().zip(&wild_ids) {
            baseline.add(name, (**certs[i].certified_key()).clone()).unwrap();
        }

        for (kind, names) in [("exact", &exact), ("wildcard", &wildcard), ("miss", &miss)] {
            let hellos: Vec<Accepted> = names.iter().map(|name| client_hello(&client_config, name)).collect();
            let expect_hit = kind != "miss";
            assert_eq!(store.resolve_name(Some(&names[0])).is_some(), expect_hit);
            assert_eq!(store.resolve(hellos[0].client_hello()).is_some(), expect_hit);
            assert_eq!(baseline.resolve(hellos[0].client_hello()).is_some(), expect_hit);

            let mut group = criterion.benchmark_group(format!("sni_{kind}"));
            group.bench_function(BenchmarkId::new("certstore_resolve_name", n), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % QUERIES;
                    black_box(store.resolve_name(Some(black_box(&names[i]))))
                })
            });
            group.bench_function(BenchmarkId::new("certstore_resolve", n), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % QUERIES;
                    black_box(store.resolve(black_box(&hellos[i]).client_hello()))
                })
            });
            group.bench_function(BenchmarkId::new("rustls_sni_resolve", n), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % QUERIES;
                    black_box(baseline.resolve(black_box(&hellos[i]).client_hello()))
                })
            });
            group.finish();
        }
    }
    criterion.final_summary();
}
