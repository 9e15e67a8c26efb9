//! The `rfc2136` provider, the propagation check and CNAME following against a real BIND9
//! (`named`) started on 127.0.0.1 for each test. Every effect is verified independently with
//! `dig`.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use ck_dns::{DnsError, DnsProvider, DnsProviderConfig, PropagationCheck, Rfc2136Config, Secret};
use ck_test_peers::bind::Bind;

const VALUE_ONE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const VALUE_TWO: &str = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";

fn config(bind: &Bind, zone: Option<&str>) -> Rfc2136Config {
    Rfc2136Config {
        server: bind.addr(),
        zone: zone.map(str::to_owned),
        tsig_key_name: bind.tsig_key_name().to_owned(),
        tsig_algorithm: "hmac-sha256.".to_owned(),
        tsig_secret: Some(Secret::new(bind.tsig_secret())),
        tsig_secret_file: None,
        ttl: 60,
    }
}

fn provider(config: Rfc2136Config) -> DnsProvider {
    DnsProviderConfig::Rfc2136(config).build().unwrap()
}

fn quick_check() -> PropagationCheck {
    PropagationCheck::new(None, Duration::from_secs(5), Duration::from_millis(100))
}

#[tokio::test]
async fn two_values_coexist_and_cleanup_removes_only_one() {
    let Some(bind) = Bind::start(&["zone-a.test"]) else {
        return;
    };
    let dns = provider(config(&bind, Some("zone-a.test")));
    assert_eq!(dns.kind(), "rfc2136");
    let name = "_acme-challenge.www.zone-a.test";

    dns.present(name, VALUE_ONE).await.unwrap();
    dns.present(&format!("{name}."), VALUE_TWO).await.unwrap();
    let mut both = vec![VALUE_ONE.to_owned(), VALUE_TWO.to_owned()];
    both.sort();
    assert_eq!(bind.txt(name), both, "named log:\n{}", bind.log_text());

    let check = quick_check().defaulting_to(&dns);
    assert_eq!(check.nameservers(), Some(&[bind.addr()][..]));
    check.wait_for(name, VALUE_ONE).await.unwrap();
    check.wait_for(name, VALUE_TWO).await.unwrap();

    dns.cleanup(name, VALUE_ONE).await.unwrap();
    assert_eq!(bind.txt(name), vec![VALUE_TWO.to_owned()]);
    // Removing a value that is not there is not an error: cleanup may run twice.
    dns.cleanup(name, VALUE_ONE).await.unwrap();
    assert_eq!(bind.txt(name), vec![VALUE_TWO.to_owned()]);
}

#[tokio::test]
async fn propagation_check_fails_clearly_for_a_value_never_written() {
    let Some(bind) = Bind::start(&["zone-a.test"]) else {
        return;
    };
    let dns = provider(config(&bind, None));
    let name = "_acme-challenge.zone-a.test";
    dns.present(name, VALUE_ONE).await.unwrap();

    let check = PropagationCheck::new(None, Duration::from_millis(600), Duration::from_millis(100)).defaulting_to(&dns);
    let started = std::time::Instant::now();
    let error = check.wait_for(name, VALUE_TWO).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let message = error.to_string();
    let DnsError::NotPropagated { last_seen, .. } = &error else {
        panic!("unexpected error: {message}");
    };
    assert_eq!(last_seen, &[format!("{} answered TXT \"{VALUE_ONE}\"", bind.addr())]);
    assert!(message.contains(VALUE_TWO), "{message}");
    assert!(message.contains("_acme-challenge.zone-a.test."), "{message}");

    let error = check
        .wait_for("_acme-challenge.nothing.zone-a.test", VALUE_ONE)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("answered no TXT record"), "{error}");
}

#[tokio::test]
async fn zone_is_discovered_by_asking_for_the_soa() {
    let Some(bind) = Bind::start(&["zone-a.test", "zone-b.test"]) else {
        return;
    };
    let dns = provider(config(&bind, None));

    let deep = "_acme-challenge.a.b.c.zone-b.test.";
    dns.present(deep, VALUE_ONE).await.unwrap();
    assert_eq!(bind.txt(deep), vec![VALUE_ONE.to_owned()]);
    dns.cleanup(deep, VALUE_ONE).await.unwrap();
    assert!(bind.txt(deep).is_empty());

    let error = dns
        .present("_acme-challenge.elsewhere.invalid", VALUE_ONE)
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::ZoneNotFound { .. }), "{error}");
    assert!(error.to_string().contains("set `zone`"), "{error}");

    let not_served = provider(config(&bind, Some("zone-x.test")));
    let error = not_served
        .present("_acme-challenge.zone-x.test", VALUE_ONE)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("NOTAUTH (the server is not the primary of zone zone-x.test.)"),
        "{error}"
    );

    let wrong_zone = provider(config(&bind, Some("zone-b.test")));
    let error = wrong_zone
        .present("_acme-challenge.zone-a.test", VALUE_ONE)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not inside the configured zone"), "{error}");
}

#[tokio::test]
async fn secret_can_come_from_the_bind_key_file() {
    let Some(bind) = Bind::start(&["zone-a.test"]) else {
        return;
    };
    let mut with_file = config(&bind, None);
    with_file.tsig_secret = None;
    with_file.tsig_secret_file = Some(bind.key_file());
    let dns = provider(with_file);
    dns.present("_acme-challenge.zone-a.test", VALUE_ONE).await.unwrap();
    assert_eq!(bind.txt("_acme-challenge.zone-a.test"), vec![VALUE_ONE.to_owned()]);
}

#[tokio::test]
async fn a_wrong_secret_or_key_name_is_reported_as_rejected_tsig() {
    let Some(bind) = Bind::start(&["zone-a.test"]) else {
        return;
    };
    let wrong_secret = base64::engine::general_purpose::STANDARD.encode([7_u8; 32]);
    let mut bad = config(&bind, Some("zone-a.test"));
    bad.tsig_secret = Some(Secret::new(wrong_secret.clone()));
    let error = provider(bad)
        .present("_acme-challenge.zone-a.test", VALUE_ONE)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DnsError::TsigRejected { .. }), "{message}");
    assert!(
        message.contains("rejected the TSIG signature (wrong key name, algorithm or secret for key `acme-key`)"),
        "{message}"
    );
    assert!(!message.contains(&wrong_secret), "{message}");
    assert!(!format!("{error:?}").contains(&wrong_secret));

    let mut unknown_key = config(&bind, Some("zone-a.test"));
    unknown_key.tsig_key_name = "no-such-key".to_owned();
    let error = provider(unknown_key)
        .present("_acme-challenge.zone-a.test", VALUE_ONE)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("for key `no-such-key`"), "{error}");
    assert!(!error.to_string().contains(bind.tsig_secret()), "{error}");

    assert!(bind.txt("_acme-challenge.zone-a.test").is_empty());
}

#[tokio::test]
async fn a_cname_delegated_challenge_is_written_where_it_lives() {
    let Some(bind) = Bind::start(&["zone-a.test", "zone-b.test"]) else {
        return;
    };
    bind.nsupdate("update add _acme-challenge.www.zone-a.test. 60 CNAME www.delegated.zone-b.test.");
    let servers = [bind.addr()];

    let target = ck_dns::resolve_challenge_target("_acme-challenge.www.zone-a.test", &servers)
        .await
        .unwrap();
    assert_eq!(target, "www.delegated.zone-b.test.");
    let undelegated = ck_dns::resolve_challenge_target("_acme-challenge.api.zone-a.test.", &servers)
        .await
        .unwrap();
    assert_eq!(undelegated, "_acme-challenge.api.zone-a.test.");

    let dns = provider(config(&bind, None));
    dns.present(&target, VALUE_ONE).await.unwrap();
    assert_eq!(bind.txt("www.delegated.zone-b.test"), vec![VALUE_ONE.to_owned()]);
    quick_check()
        .defaulting_to(&dns)
        .wait_for(&target, VALUE_ONE)
        .await
        .unwrap();
}

/// The usual delegation: the site's zone is served by one server, and the challenge name points
/// into a zone on another server, the only one that accepts updates.
#[tokio::test]
async fn a_cname_into_a_zone_on_another_server() {
    let Some(site) = Bind::start(&["zone-a.test"]) else {
        return;
    };
    let Some(acme) = Bind::start(&["zone-b.test"]) else {
        return;
    };
    site.nsupdate("update add _acme-challenge.zone-a.test. 60 CNAME zone-a.acme.zone-b.test.");

    // The site's server refuses to answer for zone-b.test; the chain still resolves.
    let target = ck_dns::resolve_challenge_target("_acme-challenge.zone-a.test", &[site.addr()])
        .await
        .unwrap();
    assert_eq!(target, "zone-a.acme.zone-b.test.");

    let dns = provider(config(&acme, None));
    dns.present(&target, VALUE_TWO).await.unwrap();
    assert_eq!(acme.txt("zone-a.acme.zone-b.test"), vec![VALUE_TWO.to_owned()]);
    quick_check()
        .defaulting_to(&dns)
        .wait_for(&target, VALUE_TWO)
        .await
        .unwrap();

    // A server that serves neither name cannot tell: that is an error, not a silent guess.
    let error = ck_dns::resolve_challenge_target("_acme-challenge.zone-a.test", &[acme.addr()])
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::CnameLookup { .. }), "{error}");
    assert!(error.to_string().contains("REFUSED"), "{error}");
}

#[tokio::test]
async fn a_cname_loop_is_refused() {
    let Some(bind) = Bind::start(&["zone-a.test"]) else {
        return;
    };
    bind.nsupdate(
        "update add loop-1.zone-a.test. 60 CNAME loop-2.zone-a.test.\n\
         update add loop-2.zone-a.test. 60 CNAME loop-1.zone-a.test.",
    );
    let error = ck_dns::resolve_challenge_target("loop-1.zone-a.test", &[bind.addr()])
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::CnameChainTooLong { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("loop-1.zone-a.test. -> loop-2.zone-a.test. -> loop-1.zone-a.test."),
        "{error}"
    );
}
