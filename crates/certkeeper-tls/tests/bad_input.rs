//! Bad certificates are refused with a typed `CertError`, and the certificate being served
//! keeps being served (checked with real handshakes).

#![allow(clippy::unwrap_used)]

mod common;

use certkeeper_tls::{CertError, CertStore, LoadedCert};
use common::{Ca, serve, served_serial, verifying_client};
use time::OffsetDateTime;

#[test]
fn mismatched_key_is_refused() {
    let ca = Ca::new();
    let cert = ca.leaf(1, &["a.test"]);
    let other = ca.leaf(2, &["a.test"]);
    let err = LoadedCert::from_pem(cert.cert_pem.as_bytes(), other.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch), "{err:?}");
}

#[test]
fn expired_and_future_certificates_are_refused() {
    let ca = Ca::new();
    let now = OffsetDateTime::now_utc();
    let expired = ca.leaf_valid(
        1,
        &["a.test"],
        now - time::Duration::days(90),
        now - time::Duration::days(1),
    );
    let err = LoadedCert::from_pem(expired.cert_pem.as_bytes(), expired.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err:?}");

    let future = ca.leaf_valid(
        2,
        &["a.test"],
        now + time::Duration::days(1),
        now + time::Duration::days(90),
    );
    let err = LoadedCert::from_pem(future.cert_pem.as_bytes(), future.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err:?}");
}

#[test]
fn garbage_is_refused() {
    let ca = Ca::new();
    let good = ca.leaf(1, &["a.test"]);

    let err = LoadedCert::from_pem(b"this is not PEM at all", good.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate), "{err:?}");

    let bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n";
    let err = LoadedCert::from_pem(bad_base64, good.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::Pem(_)), "{err:?}");

    let not_der = b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let err = LoadedCert::from_pem(not_der, good.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::InvalidCertificate { index: 0, .. }), "{err:?}");

    let err = LoadedCert::from_pem(good.cert_pem.as_bytes(), b"no key here").unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey), "{err:?}");

    let unterminated = b"-----BEGIN PRIVATE KEY-----\nAAAA\n";
    let err = LoadedCert::from_pem(good.cert_pem.as_bytes(), unterminated).unwrap_err();
    assert!(matches!(err, CertError::Pem(_)), "{err:?}");
}

#[test]
fn chain_must_be_leaf_first() {
    let ca = Ca::new();
    let leaf = ca.leaf(1, &["a.test"]);
    let ca_pem = ca.pem();
    let good_chain = format!("{}{}", leaf.cert_pem, ca_pem);
    assert!(LoadedCert::from_pem(good_chain.as_bytes(), leaf.key_pem.as_bytes()).is_ok());

    let reversed = format!("{}{}", ca_pem, leaf.cert_pem);
    let err = LoadedCert::from_pem(reversed.as_bytes(), leaf.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::ChainOrder), "{err:?}");
}

#[test]
fn names_are_canonical_and_required_names_checked() {
    let ca = Ca::new();
    let cert = ca.leaf(1, &["Shop.Example.COM", "*.cdn.example.com"]).loaded();
    assert_eq!(cert.names(), ["shop.example.com", "*.cdn.example.com"]);
    cert.require_names(&["shop.example.com", "a.cdn.example.com", "SHOP.example.com."])
        .unwrap();
    let err = cert
        .require_names(&["shop.example.com", "cdn.example.com", "b.a.cdn.example.com"])
        .unwrap_err();
    match err {
        CertError::MissingNames(missing) => assert_eq!(missing, ["cdn.example.com", "b.a.cdn.example.com"]),
        other => panic!("expected MissingNames, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_updates_keep_the_old_certificate_serving() {
    let ca = Ca::new();
    let store = CertStore::new();
    store
        .insert("site", ca.leaf(1, &["a.test", "b.test"]).loaded())
        .unwrap();
    let addr = serve(store.clone()).await;
    let client = verifying_client(&ca, &[]);
    assert_eq!(served_serial(addr, &client, Some("b.test")).await.unwrap(), 1);

    // Dropping a name the old certificate had is refused by default.
    let narrower = ca.leaf(2, &["a.test"]).loaded();
    let err = store.update("site", narrower.clone(), &[]).unwrap_err();
    assert!(
        matches!(&err, CertError::MissingNames(names) if names == &["b.test"]),
        "{err:?}"
    );
    // Explicit required names are checked instead of the old ones.
    let err = store.update("site", narrower, &["a.test", "c.test"]).unwrap_err();
    assert!(
        matches!(&err, CertError::MissingNames(names) if names == &["c.test"]),
        "{err:?}"
    );

    // Bad pairs never become a LoadedCert, so there is nothing that could reach the store.
    let next = ca.leaf(3, &["a.test", "b.test"]);
    let mismatched = LoadedCert::from_pem(next.cert_pem.as_bytes(), ca.leaf(4, &["a.test"]).key_pem.as_bytes());
    assert!(matches!(mismatched, Err(CertError::KeyMismatch)));

    assert_eq!(served_serial(addr, &client, Some("a.test")).await.unwrap(), 1);
    assert_eq!(served_serial(addr, &client, Some("b.test")).await.unwrap(), 1);
    assert_eq!(store.get("site").unwrap().names(), ["a.test", "b.test"]);

    // A proper renewal goes through.
    store.update("site", next.loaded(), &[]).unwrap();
    assert_eq!(served_serial(addr, &client, Some("b.test")).await.unwrap(), 3);
}

#[test]
fn store_bookkeeping() {
    let ca = Ca::new();
    let store = CertStore::new();
    assert!(store.is_empty());
    assert!(store.insert("a", ca.leaf(1, &["a.test"]).loaded()).unwrap().is_none());
    assert!(matches!(
        store.insert("", ca.leaf(1, &["a.test"]).loaded()),
        Err(CertError::InvalidId)
    ));
    let previous = store.insert("a", ca.leaf(2, &["a.test", "*.a.test"]).loaded()).unwrap();
    assert_eq!(previous.unwrap().names(), ["a.test"]);
    store
        .insert_many((0..10).map(|i| (format!("bulk-{i}"), ca.leaf(10 + i, &[&format!("n{i}.test")]).loaded())))
        .unwrap();
    assert_eq!(store.len(), 11);
    assert_eq!(store.name_count(), 12);
    assert!(store.resolve_name(Some("x.a.test")).is_some());
    assert!(store.resolve_name(Some("N3.TEST.")).is_some());
    assert!(store.remove("a"));
    assert!(!store.remove("a"));
    assert!(store.resolve_name(Some("x.a.test")).is_none());
    assert_eq!(store.len(), 10);
}
