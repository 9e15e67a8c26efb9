//! PKCS#10 certificate signing requests: parsing, signature check, key strength, names.
//!
//! rcgen's own CSR parser refuses any extension it does not know (a must-staple request from
//! openssl, for instance), so foreign CSRs are read with x509-parser and only the public key
//! is handed to rcgen.

use std::net::IpAddr;

use ck_domain::{CsrNames, SubjectAltName};
use rcgen::{CertificateParams, KeyPair};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::PkiError;

const OID_EC_P256: &str = "1.2.840.10045.3.1.7";
const OID_EC_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// A CSR whose signature verified and whose key is strong enough.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    /// The request, normalized to PEM.
    pub pem: String,
    /// The DER SubjectPublicKeyInfo to certify.
    pub public_key_der: Vec<u8>,
    /// What it asks for.
    pub names: CsrNames,
    /// A short description of the key, e.g. "ecdsa-p256" or "rsa-3072".
    pub key_description: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SignatureCheck {
    Verify,
    Skip,
}

impl ParsedCsr {
    /// Parses PEM (or DER) and checks the signature and key strength: for CSRs from outside.
    pub fn parse(input: &[u8]) -> Result<Self, PkiError> {
        Self::read(input, SignatureCheck::Verify)
    }

    /// Parses a CSR that `parse` accepted before and the server stored (renewals re-sign it).
    /// The signature is not checked again: an ECDSA verification costs more than signing the
    /// certificate, and whoever can alter stored rows can alter anything else there too.
    pub fn parse_stored(input: &[u8]) -> Result<Self, PkiError> {
        Self::read(input, SignatureCheck::Skip)
    }

    fn read(input: &[u8], signature_check: SignatureCheck) -> Result<Self, PkiError> {
        let der = match std::str::from_utf8(input) {
            Ok(text) if text.contains("-----BEGIN") => {
                let block = pem::parse(text).map_err(|e| PkiError::CsrUnparsable(e.to_string()))?;
                if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
                    return Err(PkiError::CsrUnparsable(format!("PEM block is '{}'", block.tag())));
                }
                block.into_contents()
            }
            _ => input.to_vec(),
        };
        let (rest, csr) =
            X509CertificationRequest::from_der(&der).map_err(|e| PkiError::CsrUnparsable(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::CsrUnparsable("trailing bytes after the request".to_owned()));
        }
        let info = &csr.certification_request_info;
        // Key first: "unsupported curve" is a more useful answer than "bad signature" for a key
        // whose signature the provider cannot even check.
        let key_description = check_key_strength(&info.subject_pki)?;
        if signature_check == SignatureCheck::Verify {
            csr.verify_signature().map_err(|_| PkiError::CsrBadSignature)?;
        }
        let common_name = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        for extension in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                for general_name in &san.general_names {
                    sans.push(san_from_general_name(general_name)?);
                }
            }
        }
        Ok(Self {
            pem: pem_encode("CERTIFICATE REQUEST", &der),
            public_key_der: info.subject_pki.raw.to_vec(),
            names: CsrNames { common_name, sans },
            key_description,
        })
    }
}

fn san_from_general_name(general_name: &GeneralName<'_>) -> Result<SubjectAltName, PkiError> {
    match general_name {
        GeneralName::DNSName(name) => SubjectAltName::parse(name).map_err(|e| PkiError::CsrBadName(e.to_string())),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                _ => None,
            };
            ip.map(SubjectAltName::Ip)
                .ok_or_else(|| PkiError::CsrBadName("malformed IP address SAN".to_owned()))
        }
        other => Err(PkiError::CsrBadName(format!(
            "{other} (only DNS names and IP addresses are issued)"
        ))),
    }
}

fn check_key_strength(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<String, PkiError> {
    let parsed = spki.parsed().map_err(|e| PkiError::CsrWeakKey(e.to_string()))?;
    match parsed {
        PublicKey::RSA(rsa) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                return Err(PkiError::CsrWeakKey(format!(
                    "RSA-{bits} is too small (at least 2048 bits)"
                )));
            }
            if bits > 8192 {
                return Err(PkiError::CsrWeakKey(format!(
                    "RSA-{bits} is too large (at most 8192 bits)"
                )));
            }
            check_rsa_exponent(&rsa)?;
            Ok(format!("rsa-{bits}"))
        }
        PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|params| params.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_EC_P256 => Ok("ecdsa-p256".to_owned()),
                OID_EC_P384 => Ok("ecdsa-p384".to_owned()),
                _ => Err(PkiError::CsrWeakKey(format!(
                    "EC curve {curve} is not supported (use P-256 or P-384)"
                ))),
            }
        }
        _ if spki.algorithm.algorithm.to_id_string() == OID_ED25519 => Ok("ed25519".to_owned()),
        _ => Err(PkiError::CsrWeakKey(format!(
            "key algorithm {} is not supported (use ECDSA P-256/P-384, Ed25519 or RSA >= 2048)",
            spki.algorithm.algorithm.to_id_string()
        ))),
    }
}

/// Smallest RSA public exponent accepted: above 2^16, as FIPS 186-5 requires. Small exponents
/// (3 above all) turn padding or implementation flaws in the key holder's signer into
/// signature forgeries (Bleichenbacher 2006), and no current tool makes them by default.
const MIN_RSA_EXPONENT: u64 = (1 << 16) + 1;

/// Largest accepted: common verifiers (aws-lc, Go, Windows) refuse exponents above 2^32.
const MAX_RSA_EXPONENT: u64 = 1 << 32;

fn check_rsa_exponent(rsa: &x509_parser::public_key::RSAPublicKey<'_>) -> Result<(), PkiError> {
    match rsa.try_exponent() {
        Ok(e) if (MIN_RSA_EXPONENT..MAX_RSA_EXPONENT).contains(&e) && e % 2 == 1 => Ok(()),
        Ok(e) => Err(PkiError::CsrWeakKey(format!(
            "RSA public exponent {e} is not accepted (it must be odd and above 65536): make a new key with the \
             standard exponent 65537, the default of openssl and every current tool"
        ))),
        Err(_) => Err(PkiError::CsrWeakKey(
            "the RSA public exponent is malformed or too large: make a new key with the standard exponent 65537"
                .to_owned(),
        )),
    }
}

/// Builds a CSR for `names` signed by `key` (server-side key generation, tests, benchmarks).
pub fn build_csr(key: &KeyPair, names: &[SubjectAltName]) -> Result<String, PkiError> {
    let texts: Vec<String> = names.iter().map(ToString::to_string).collect();
    let mut params = CertificateParams::new(texts).map_err(|e| PkiError::Signing(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.to_string());
    }
    let csr = params
        .serialize_request(key)
        .map_err(|e| PkiError::Signing(e.to_string()))?;
    csr.pem().map_err(|e| PkiError::Signing(e.to_string()))
}

/// PEM text of one DER block, LF line endings.
pub fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -pkeyopt rsa_keygen_pubexp:3`,
    /// then `openssl req -new -subj /CN=e3.example`.
    const RSA_E3_CSR: &str = include_str!("testdata/rsa-e3.csr.pem");

    #[test]
    fn rsa_csr_with_small_exponent_is_refused() {
        let refused = ParsedCsr::parse(RSA_E3_CSR.as_bytes()).unwrap_err();
        assert!(matches!(refused, PkiError::CsrWeakKey(_)), "{refused:?}");
        assert!(refused.to_string().contains("exponent 3 "), "{refused}");
        assert!(refused.to_string().contains("65537"), "{refused}");
        // Also when it was stored before the rule existed: a renewal does not re-sign it.
        assert!(ParsedCsr::parse_stored(RSA_E3_CSR.as_bytes()).is_err());
        // The standard exponent passes.
        let key = crate::generate_key(ck_domain::KeyType::Rsa2048).unwrap();
        let csr = build_csr(&key, &[SubjectAltName::parse("e65537.example").unwrap()]).unwrap();
        assert_eq!(ParsedCsr::parse(csr.as_bytes()).unwrap().key_description, "rsa-2048");
    }
}
