//! Orders taken up again by URL, as a worker does after a crash of the one that placed them:
//! against a real Pebble, a pending order is completed and a finalized one only downloaded,
//! and the CA issues one certificate per order either way.

#![allow(clippy::unwrap_used)]

use ck_acme::{AcmeIssuer, AcmeIssuerConfig, ChallengeResponder, OrderRequest};
use ck_test_peers::pebble::{Pebble, PebbleOptions};

fn csr_der(name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[tokio::test]
async fn orders_resume_by_url_without_a_second_issuance() {
    let Some(pebble) = Pebble::start(
        PebbleOptions {
            always_valid: true,
            ..PebbleOptions::default()
        },
        "acme-resume",
    ) else {
        return;
    };
    let config = AcmeIssuerConfig::from_json(&serde_json::json!({
        "directory": pebble.directory_url(),
        "ca_bundle_pem": pebble.tls_ca_pem(),
        "challenge": "http-01",
    }))
    .unwrap();
    let acme: AcmeIssuer = AcmeIssuer::register(config, ChallengeResponder::default())
        .await
        .unwrap()
        .issuer;

    // A pending order, left by a "dead" worker, completed by the next one.
    let names = ["resume-pending.example.com".to_owned()];
    let csr = csr_der(&names[0]);
    let request = OrderRequest {
        names: &names,
        csr_der: &csr,
        challenge: None,
        replaces: None,
    };
    let placed = acme.open_order(&request, None).await.unwrap();
    assert!(!placed.resumed());
    let url = placed.url().to_owned();
    drop(placed);
    let taken_up = acme.open_order(&request, Some(&url)).await.unwrap();
    assert!(taken_up.resumed());
    assert_eq!(taken_up.url(), url);
    let chain = acme.complete_order(taken_up, &request).await.unwrap();
    assert_eq!(chain.order_url, url);
    assert_eq!(pebble.issued_count(), 1);

    // A finalized order: resuming downloads the same certificate; nothing new is issued.
    let again = acme.open_order(&request, Some(&url)).await.unwrap();
    assert!(again.resumed());
    let downloaded = acme.complete_order(again, &request).await.unwrap();
    assert_eq!(downloaded.chain_pem, chain.chain_pem);
    assert_eq!(pebble.issued_count(), 1);

    // An order the CA does not know: a new one is placed.
    let unknown = format!("{}x", url);
    let fresh = acme.open_order(&request, Some(&unknown)).await.unwrap();
    assert!(!fresh.resumed());
    assert_ne!(fresh.url(), url);
    acme.complete_order(fresh, &request).await.unwrap();
    assert_eq!(pebble.issued_count(), 2);
}
