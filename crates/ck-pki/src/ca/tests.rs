//! Unit tests of the local CA: every certificate is re-parsed and its extensions checked.

use ck_domain::{KeyType, SubjectAltName};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::{ParsedCsr, build_csr};

const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

fn names(list: &[&str]) -> Vec<SubjectAltName> {
    list.iter().map(|n| SubjectAltName::parse(n).unwrap()).collect()
}

fn summary(pem_text: &str) -> String {
    let block = pem::parse(pem_text).unwrap();
    let (_, cert) = X509Certificate::from_der(block.contents()).unwrap();
    let mut lines = vec![
        format!("subject: {}", cert.subject()),
        format!("issuer: {}", cert.issuer()),
    ];
    for ext in cert.extensions() {
        let line = match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                let names: Vec<String> = san
                    .general_names
                    .iter()
                    .map(|n| match n {
                        GeneralName::DNSName(d) => format!("DNS:{d}"),
                        GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
                        other => format!("{other}"),
                    })
                    .collect();
                format!("san: {}", names.join(" "))
            }
            ParsedExtension::BasicConstraints(bc) => {
                format!("basic: ca={} pathlen={:?}", bc.ca, bc.path_len_constraint)
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                format!("eku: server={} client={}", eku.server_auth, eku.client_auth)
            }
            ParsedExtension::KeyUsage(ku) => format!("ku: {ku}"),
            ParsedExtension::AuthorityKeyIdentifier(_) => "aki".to_owned(),
            ParsedExtension::SubjectKeyIdentifier(_) => "ski".to_owned(),
            other => format!("other: {other:?}"),
        };
        lines.push(line);
    }
    lines.join("\n")
}

fn new_ca(key_type: KeyType) -> (CaMaterial, LocalCa) {
    let config = CaConfig {
        key_type,
        ..CaConfig::default()
    };
    let material = CaMaterial::create(&config, NOW).unwrap();
    let ca = LocalCa::load(&material).unwrap();
    (material, ca)
}

fn profile(sans: &[&str]) -> LeafProfile {
    LeafProfile {
        common_name: sans[0].to_owned(),
        sans: names(sans),
        not_before: NOW - Duration::minutes(1),
        not_after: NOW + Duration::days(90),
        client_auth: false,
    }
}

#[test]
fn ca_hierarchy_has_ca_extensions() {
    let (material, ca) = new_ca(KeyType::EcdsaP256);
    assert_eq!(
        summary(&material.root_cert_pem),
        "subject: O=certkeeper, CN=certkeeper local Root CA\n\
         issuer: O=certkeeper, CN=certkeeper local Root CA\n\
         ku: Digital Signature, Key Cert Sign, CRL Sign\n\
         ski\n\
         basic: ca=true pathlen=Some(1)"
    );
    assert_eq!(
        summary(ca.intermediate_pem()),
        "subject: O=certkeeper, CN=certkeeper local Intermediate CA\n\
         issuer: O=certkeeper, CN=certkeeper local Root CA\n\
         aki\n\
         ku: Digital Signature, Key Cert Sign, CRL Sign\n\
         ski\n\
         basic: ca=true pathlen=Some(0)"
    );
    assert_eq!(ca.not_after(), NOW + Duration::days(1825));
}

#[test]
fn signs_a_csr_with_leaf_extensions() {
    let (_, ca) = new_ca(KeyType::EcdsaP256);
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let csr = ParsedCsr::parse(
        build_csr(&key, &names(&["app.internal", "api.internal"]))
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(csr.key_description, "ecdsa-p256");
    assert_eq!(csr.names.common_name.as_deref(), Some("app.internal"));
    let issued = ca
        .sign(
            &csr.public_key_der,
            &profile(&["app.internal", "api.internal", "10.0.0.1"]),
        )
        .unwrap();
    assert_eq!(
        summary(&issued.cert_pem),
        "subject: CN=app.internal\n\
         issuer: O=certkeeper, CN=certkeeper local Intermediate CA\n\
         aki\n\
         san: DNS:app.internal DNS:api.internal IP:[10, 0, 0, 1]\n\
         ku: Digital Signature\n\
         eku: server=true client=false\n\
         ski\n\
         basic: ca=false pathlen=None"
    );
    assert_eq!(issued.serial.len(), 32);
    assert_eq!(issued.fingerprint.len(), 64);
    // clientAuth only when the profile asks for it (security review, finding 3).
    let mut client = profile(&["device.internal"]);
    client.client_auth = true;
    let issued = ca.sign(&csr.public_key_der, &client).unwrap();
    assert!(summary(&issued.cert_pem).contains("eku: server=true client=true"));
    assert!(issued.chain_pem.starts_with(&issued.cert_pem) && issued.chain_pem.ends_with(ca.intermediate_pem()));
}

#[test]
fn rsa_leaves_get_key_encipherment_and_validity_is_capped() {
    let (_, ca) = new_ca(KeyType::EcdsaP384);
    let key = generate_key(KeyType::Rsa2048).unwrap();
    let mut leaf = profile(&["rsa.internal"]);
    leaf.not_after = NOW + Duration::days(10_000);
    let issued = ca.sign(&key.subject_public_key_info(), &leaf).unwrap();
    assert!(summary(&issued.cert_pem).contains("ku: Digital Signature, Key Encipherment"));
    assert_eq!(issued.not_after, ca.not_after());
}

#[test]
fn serials_are_unique() {
    let (_, ca) = new_ca(KeyType::Ed25519);
    let key = generate_key(KeyType::Ed25519).unwrap();
    let serials: std::collections::BTreeSet<String> = (0..200)
        .map(|_| {
            ca.sign(&key.subject_public_key_info(), &profile(&["a.internal"]))
                .unwrap()
                .serial
        })
        .collect();
    assert_eq!(serials.len(), 200);
}

#[test]
fn material_round_trips_and_mismatched_keys_are_refused() {
    let (material, _) = new_ca(KeyType::EcdsaP256);
    let (other, _) = new_ca(KeyType::EcdsaP256);
    assert!(LocalCa::load(&material).is_ok());
    let mixed = CaMaterial {
        intermediate_key: other.intermediate_key,
        ..material
    };
    let err = LocalCa::load(&mixed).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn bad_csrs_are_refused() {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let good = build_csr(&key, &names(&["a.example"])).unwrap();
    assert!(matches!(ParsedCsr::parse(b"garbage"), Err(PkiError::CsrUnparsable(_))));
    let cert_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        ParsedCsr::parse(cert_block.as_bytes()),
        Err(PkiError::CsrUnparsable(_))
    ));
    // Flip one byte inside the signed part: the signature must no longer verify.
    let mut der = pem::parse(&good).unwrap().into_contents();
    let idx = der.len() / 2;
    der[idx] ^= 0x01;
    let tampered = ParsedCsr::parse(&der);
    assert!(
        matches!(
            tampered,
            Err(PkiError::CsrBadSignature) | Err(PkiError::CsrUnparsable(_))
        ),
        "{tampered:?}"
    );
    let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let weak = ParsedCsr::parse(build_csr(&p521, &names(&["a.example"])).unwrap().as_bytes());
    assert!(matches!(weak, Err(PkiError::CsrWeakKey(_))), "{weak:?}");
}
