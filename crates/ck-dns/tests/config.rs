//! Provider configuration as operators write it (YAML and JSON): tagging by `provider`, defaults,
//! refusal of unknown fields, and secrets kept out of `Debug` output and error messages.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use ck_dns::{DnsProviderConfig, PropagationCheck};

const TSIG_SECRET: &str = "c2VjcmV0LXRzaWcta2V5LWJ5dGVzLTMyLWxvbmchISE=";
const CF_TOKEN: &str = "cf-token-do-not-print";
const ENV_SECRET: &str = "env-secret-do-not-print";

#[test]
fn rfc2136_from_yaml_with_defaults() {
    let yaml = format!(
        "provider: rfc2136\n\
         server: 127.0.0.1:5353\n\
         tsig_key_name: acme-key\n\
         tsig_algorithm: hmac-sha256.\n\
         tsig_secret: \"{TSIG_SECRET}\"\n"
    );
    let config: DnsProviderConfig = yaml_serde::from_str(&yaml).unwrap();
    let DnsProviderConfig::Rfc2136(rfc2136) = &config else {
        panic!("parsed as {config:?}");
    };
    assert_eq!(rfc2136.server, "127.0.0.1:5353".parse().unwrap());
    assert_eq!(rfc2136.ttl, 60);
    assert_eq!(rfc2136.zone, None);

    let provider = config.build().unwrap();
    assert_eq!(provider.kind(), "rfc2136");
    assert_eq!(
        provider.authoritative_servers(),
        Some(vec!["127.0.0.1:5353".parse().unwrap()])
    );
    let check = PropagationCheck::default().defaulting_to(&provider);
    assert_eq!(check.nameservers(), Some(&["127.0.0.1:5353".parse().unwrap()][..]));

    for shown in [format!("{config:?}"), format!("{provider:?}")] {
        assert!(!shown.contains(TSIG_SECRET), "{shown}");
        assert!(shown.contains("acme-key"), "{shown}");
    }
}

#[test]
fn exec_and_cloudflare_from_json() {
    let exec: DnsProviderConfig = serde_json::from_str(&format!(
        r#"{{"provider": "exec", "command": "/usr/local/bin/dns-hook", "env": {{"API_KEY": "{ENV_SECRET}"}}}}"#
    ))
    .unwrap();
    let DnsProviderConfig::Exec(exec_config) = &exec else {
        panic!("parsed as {exec:?}");
    };
    assert_eq!(exec_config.timeout, 30);
    assert_eq!(exec.build().unwrap().kind(), "exec");
    let shown = format!("{exec:?}");
    assert!(!shown.contains(ENV_SECRET) && shown.contains("API_KEY"), "{shown}");

    let cloudflare: DnsProviderConfig = serde_json::from_str(&format!(
        r#"{{"provider": "cloudflare", "api_token": "{CF_TOKEN}", "zone_id": "023e105f4ecef8ad9ca31a8372d0c353"}}"#
    ))
    .unwrap();
    let provider = cloudflare.build().unwrap();
    assert_eq!(provider.kind(), "cloudflare");
    assert_eq!(provider.authoritative_servers(), None);
    for shown in [format!("{cloudflare:?}"), format!("{provider:?}")] {
        assert!(!shown.contains(CF_TOKEN), "{shown}");
    }
}

#[test]
fn unknown_fields_and_providers_are_refused() {
    let typo = serde_json::from_str::<DnsProviderConfig>(
        r#"{"provider": "rfc2136", "server": "127.0.0.1:53", "tsig_key_name": "k",
            "tsig_algorithm": "hmac-sha256", "tsig_secret": "c2VjcmV0", "tsig_secert_file": "/x"}"#,
    )
    .unwrap_err();
    assert!(typo.to_string().contains("tsig_secert_file"), "{typo}");

    let yaml_typo =
        yaml_serde::from_str::<DnsProviderConfig>("provider: exec\ncommand: /bin/true\ntimeout_seconds: 5\n")
            .unwrap_err();
    assert!(yaml_typo.to_string().contains("timeout_seconds"), "{yaml_typo}");

    let unknown = serde_json::from_str::<DnsProviderConfig>(r#"{"provider": "route53"}"#).unwrap_err();
    assert!(unknown.to_string().contains("route53"), "{unknown}");
}

#[test]
fn secrets_must_be_given_exactly_once() {
    let neither: DnsProviderConfig = yaml_serde::from_str(
        "provider: rfc2136\nserver: 127.0.0.1:53\ntsig_key_name: k\ntsig_algorithm: hmac-sha512\n",
    )
    .unwrap();
    let error = neither.build().unwrap_err().to_string();
    assert!(error.contains("`tsig_secret` or `tsig_secret_file`"), "{error}");

    let both: DnsProviderConfig = serde_json::from_str(&format!(
        r#"{{"provider": "cloudflare", "api_token": "{CF_TOKEN}", "api_token_file": "/etc/cf-token"}}"#
    ))
    .unwrap();
    let error = both.build().unwrap_err().to_string();
    assert!(error.contains("only one of"), "{error}");
    assert!(!error.contains(CF_TOKEN), "{error}");

    let missing_file: DnsProviderConfig = serde_json::from_str(
        r#"{"provider": "rfc2136", "server": "127.0.0.1:53", "tsig_key_name": "k",
            "tsig_algorithm": "hmac-sha256", "tsig_secret_file": "/nonexistent/tsig.key"}"#,
    )
    .unwrap();
    let error = missing_file.build().unwrap_err().to_string();
    assert!(error.starts_with("cannot read /nonexistent/tsig.key"), "{error}");
}
