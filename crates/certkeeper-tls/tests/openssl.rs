//! The same SNI, wildcard and fallback rules seen by an independent TLS stack:
//! `openssl s_client` against a `CertStore`-backed server on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use certkeeper_tls::{CertStore, Fallback};
use common::{Ca, OpensslPeer, openssl_peer, serve};

fn peer(serial: u64) -> Option<OpensslPeer> {
    Some(OpensslPeer {
        common_name: format!("leaf-{serial}"),
        serial,
    })
}

#[tokio::test]
async fn openssl_sees_the_certificate_for_each_name() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("apex", ca.leaf(11, &["example.com"]).loaded()).unwrap();
    store.insert("wild", ca.leaf(12, &["*.example.com"]).loaded()).unwrap();
    store.insert("other", ca.leaf(13, &["other.test"]).loaded()).unwrap();
    let addr = serve(store.clone()).await;

    assert_eq!(openssl_peer(addr, Some("example.com")).await, peer(11));
    assert_eq!(openssl_peer(addr, Some("a.example.com")).await, peer(12));
    assert_eq!(openssl_peer(addr, Some("Other.Test")).await, peer(13));
    // Nothing covers these and the fallback refuses.
    assert_eq!(openssl_peer(addr, Some("b.a.example.com")).await, None);
    assert_eq!(openssl_peer(addr, None).await, None);
}

#[tokio::test]
async fn openssl_wildcard_does_not_cover_the_apex() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("wild", ca.leaf(21, &["*.example.com"]).loaded()).unwrap();
    let addr = serve(store.clone()).await;

    assert_eq!(openssl_peer(addr, Some("a.example.com")).await, peer(21));
    assert_eq!(openssl_peer(addr, Some("example.com")).await, None);
    assert_eq!(openssl_peer(addr, Some("b.a.example.com")).await, None);
}

#[tokio::test]
async fn openssl_fallback_certificate_and_refuse() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("site", ca.leaf(31, &["site.test"]).loaded()).unwrap();
    store
        .insert("default", ca.leaf(32, &["default.test"]).loaded())
        .unwrap();
    let addr = serve(store.clone()).await;

    assert_eq!(openssl_peer(addr, Some("unknown.test")).await, None);
    store.set_fallback(Fallback::Certificate("default".into()));
    assert_eq!(openssl_peer(addr, Some("unknown.test")).await, peer(32));
    assert_eq!(openssl_peer(addr, None).await, peer(32));
    assert_eq!(openssl_peer(addr, Some("site.test")).await, peer(31));
    store.set_fallback(Fallback::Refuse);
    assert_eq!(openssl_peer(addr, None).await, None);
}

#[tokio::test]
async fn openssl_sees_a_swap() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("site", ca.leaf(41, &["site.test"]).loaded()).unwrap();
    let addr = serve(store.clone()).await;
    assert_eq!(openssl_peer(addr, Some("site.test")).await, peer(41));
    store.update("site", ca.leaf(42, &["site.test"]).loaded(), &[]).unwrap();
    assert_eq!(openssl_peer(addr, Some("site.test")).await, peer(42));
}
