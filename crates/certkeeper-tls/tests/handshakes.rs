//! Real TLS handshakes on 127.0.0.1 with a tokio-rustls client: certificate per SNI, wildcard
//! rules, fallback, tie-breaking, the tls-alpn-01 hook, and hot swaps under load.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use certkeeper_tls::{CertStore, Fallback};
use common::{Ca, any_name_client, connect, echo, peer_leaf, serial_of, serve, served_serial, verifying_client};
use time::OffsetDateTime;

#[tokio::test]
async fn each_server_name_gets_its_certificate() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("apex", ca.leaf(1, &["example.com"]).loaded()).unwrap();
    store.insert("wild", ca.leaf(2, &["*.example.com"]).loaded()).unwrap();
    store.insert("www", ca.leaf(3, &["www.example.com"]).loaded()).unwrap();
    store
        .insert("other", ca.leaf(4, &["other.test", "xn--bcher-kva.example"]).loaded())
        .unwrap();
    let addr = serve(store.clone()).await;
    let client = verifying_client(&ca, &[]);

    assert_eq!(served_serial(addr, &client, Some("example.com")).await.unwrap(), 1);
    assert_eq!(served_serial(addr, &client, Some("a.example.com")).await.unwrap(), 2);
    assert_eq!(served_serial(addr, &client, Some("www.example.com")).await.unwrap(), 3);
    assert_eq!(served_serial(addr, &client, Some("other.test")).await.unwrap(), 4);
    assert_eq!(
        served_serial(addr, &client, Some("xn--bcher-kva.example"))
            .await
            .unwrap(),
        4
    );
    assert_eq!(served_serial(addr, &client, Some("OTHER.Test")).await.unwrap(), 4);
}

#[tokio::test]
async fn wildcard_covers_exactly_one_label() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("wild", ca.leaf(7, &["*.example.com"]).loaded()).unwrap();
    let addr = serve(store.clone()).await;
    let client = any_name_client();

    assert_eq!(served_serial(addr, &client, Some("a.example.com")).await.unwrap(), 7);
    assert!(served_serial(addr, &client, Some("example.com")).await.is_err());
    assert!(served_serial(addr, &client, Some("b.a.example.com")).await.is_err());
}

#[tokio::test]
async fn fallback_certificate_serves_unknown_and_missing_names() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("site", ca.leaf(1, &["site.test"]).loaded()).unwrap();
    store.insert("default", ca.leaf(9, &["default.test"]).loaded()).unwrap();
    store.set_fallback(Fallback::Certificate("default".into()));
    let addr = serve(store.clone()).await;
    let client = any_name_client();

    assert_eq!(served_serial(addr, &client, Some("site.test")).await.unwrap(), 1);
    assert_eq!(served_serial(addr, &client, Some("unknown.test")).await.unwrap(), 9);
    assert_eq!(served_serial(addr, &client, None).await.unwrap(), 9);

    // A fallback id with nothing stored under it refuses rather than guessing.
    store.remove("default");
    assert!(served_serial(addr, &client, None).await.is_err());
    assert_eq!(served_serial(addr, &client, Some("site.test")).await.unwrap(), 1);
}

#[tokio::test]
async fn fallback_refuse_aborts_the_handshake() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("site", ca.leaf(1, &["site.test"]).loaded()).unwrap();
    assert_eq!(store.fallback(), Fallback::Refuse);
    let addr = serve(store.clone()).await;
    let client = any_name_client();

    assert!(served_serial(addr, &client, None).await.is_err());
    assert!(served_serial(addr, &client, Some("unknown.test")).await.is_err());
    assert_eq!(served_serial(addr, &client, Some("site.test")).await.unwrap(), 1);
}

#[tokio::test]
async fn ties_go_to_the_later_expiry_then_the_smaller_id() {
    let ca = Ca::new();
    let now = OffsetDateTime::now_utc();
    let early = now - time::Duration::hours(1);
    let store = CertStore::new();
    store
        .insert(
            "b-short",
            ca.leaf_valid(1, &["tie.test"], early, now + time::Duration::days(10))
                .loaded(),
        )
        .unwrap();
    store
        .insert(
            "c-long",
            ca.leaf_valid(2, &["tie.test"], early, now + time::Duration::days(80))
                .loaded(),
        )
        .unwrap();
    let addr = serve(store.clone()).await;
    let client = verifying_client(&ca, &[]);
    assert_eq!(served_serial(addr, &client, Some("tie.test")).await.unwrap(), 2);

    let same = now + time::Duration::days(80);
    store
        .insert("a-same", ca.leaf_valid(3, &["tie.test"], early, same).loaded())
        .unwrap();
    store
        .insert("c-long", ca.leaf_valid(2, &["tie.test"], early, same).loaded())
        .unwrap();
    assert_eq!(served_serial(addr, &client, Some("tie.test")).await.unwrap(), 3);
}

#[tokio::test]
async fn tls_alpn_hook_is_consulted_first_for_acme_tls_1() {
    let ca = Ca::new();
    let store = CertStore::new();
    store.insert("site", ca.leaf(1, &["site.test"]).loaded()).unwrap();
    let challenge = ca.leaf(42, &["site.test"]).loaded();
    let challenge_key = challenge.certified_key().clone();
    store.set_acme_tls_alpn(Arc::new(move |name: &str| {
        (name == "site.test").then(|| challenge_key.clone())
    }));
    let addr = serve(store.clone()).await;

    let acme_client = verifying_client(&ca, &[b"acme-tls/1"]);
    let plain_client = verifying_client(&ca, &[b"h2", b"http/1.1"]);
    assert_eq!(served_serial(addr, &acme_client, Some("site.test")).await.unwrap(), 42);
    assert_eq!(served_serial(addr, &plain_client, Some("site.test")).await.unwrap(), 1);

    store.clear_acme_tls_alpn();
    assert_eq!(served_serial(addr, &acme_client, Some("site.test")).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_during_a_stream_of_handshakes_fails_none() {
    const HANDSHAKES: usize = 600;
    const SWAPS: usize = 50;
    let ca = Ca::new();
    let a = ca.leaf(100, &["swap.test"]);
    let b = ca.leaf(200, &["swap.test"]);
    let (a_loaded, b_loaded) = (a.loaded(), b.loaded());
    let store = CertStore::new();
    store.insert("swap", a_loaded.clone()).unwrap();
    let addr = serve(store.clone()).await;
    let client = verifying_client(&ca, &[]);

    let done = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut swaps = 0;
            // Keep swapping until both the swap count is reached and the client is finished, so
            // the swaps are spread over the whole stream of handshakes.
            while swaps < SWAPS || !done.load(Ordering::Relaxed) {
                let next = if swaps % 2 == 0 { &b_loaded } else { &a_loaded };
                store.update("swap", next.clone(), &["swap.test"]).unwrap();
                swaps += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            swaps
        })
    };

    let mut failures = Vec::new();
    let mut seen = [0usize; 2];
    let mut changes = 0;
    let mut last = 0;
    for i in 0..HANDSHAKES {
        match served_serial(addr, &client, Some("swap.test")).await {
            Ok(serial) => {
                seen[usize::from(serial == 200)] += 1;
                if serial != last {
                    changes += 1;
                    last = serial;
                }
            }
            Err(err) => failures.push(format!("handshake {i}: {err}")),
        }
    }
    done.store(true, Ordering::Relaxed);
    let swaps = swapper.await.unwrap();

    assert!(failures.is_empty(), "failed handshakes: {failures:?}");
    assert!(swaps >= SWAPS);
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both certificates must have been served: {seen:?}"
    );
    assert!(
        changes > 5,
        "the swaps must interleave with the handshakes: {changes} changes"
    );
}

#[tokio::test]
async fn an_open_connection_keeps_its_certificate_after_a_swap() {
    let ca = Ca::new();
    let old = ca.leaf(1, &["keep.test"]);
    let new = ca.leaf(2, &["keep.test"]);
    let store = CertStore::new();
    store.insert("keep", old.loaded()).unwrap();
    let addr = serve(store.clone()).await;
    let client = verifying_client(&ca, &[]);

    let mut open = connect(addr, &client, Some("keep.test")).await.unwrap();
    echo(&mut open, b"before the swap\n").await;
    store.update("keep", new.loaded(), &[]).unwrap();

    echo(&mut open, b"after the swap\n").await;
    assert_eq!(serial_of(&peer_leaf(&open)), 1);
    assert_eq!(served_serial(addr, &client, Some("keep.test")).await.unwrap(), 2);
    echo(&mut open, b"still alive\n").await;
}
