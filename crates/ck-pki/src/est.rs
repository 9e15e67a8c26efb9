//! EST (RFC 7030) encodings: base64 bodies, certs-only PKCS#7 answers, CSR attributes.

use base64::Engine;
use cms::content_info::ContentInfo;
use der::{Decode, Encode};

use crate::PkiError;

/// The largest EST request body accepted (a CSR with a 16384-bit RSA key is far below it).
pub const MAX_EST_BODY: usize = 64 * 1024;

/// Decodes an EST request body: base64 (RFC 7030 §4.2.1, `Content-Transfer-Encoding: base64`),
/// line breaks and spaces allowed, of DER.
pub fn decode_est_body(body: &[u8]) -> Result<Vec<u8>, PkiError> {
    if body.len() > MAX_EST_BODY {
        return Err(PkiError::CsrUnparsable(format!(
            "the body is {} bytes; at most {MAX_EST_BODY} are accepted",
            body.len()
        )));
    }
    let compact: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| PkiError::CsrUnparsable(format!("the body is not base64 ({e}); send the DER CSR base64-encoded")))
}

/// A certs-only PKCS#7 SignedData (DER) holding `chain_der`, as EST answers certificates.
pub fn certs_only_pkcs7(chain_der: &[Vec<u8>]) -> Result<Vec<u8>, PkiError> {
    let certs = chain_der
        .iter()
        .map(|der| x509_cert::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Signing(format!("PKCS#7: {e}")))?;
    ContentInfo::try_from(certs)
        .and_then(|info| info.to_der())
        .map_err(|e| PkiError::Signing(format!("PKCS#7: {e}")))
}

/// The DER certificates of a PEM chain, in order.
pub fn chain_der(chain_pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    Ok(pem::parse_many(chain_pem)
        .map_err(|e| PkiError::BadChain(e.to_string()))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

/// The CSR attributes an EST client should use (RFC 7030 §4.5.2): ecdsa-with-SHA256 keys,
/// encoded once by hand because it is a constant SEQUENCE of one OID.
pub fn csr_attributes() -> Vec<u8> {
    // SEQUENCE { OBJECT IDENTIFIER ecdsa-with-SHA256 (1.2.840.10045.4.3.2) }
    vec![0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafIdentity {
    /// Its DNS and IP subjectAltNames, as text.
    pub names: Vec<String>,
    /// Its serial, lowercase hex.
    pub serial_hex: String,
}

/// The names and serial of a DER certificate.
pub fn leaf_names_and_serial(der: &[u8]) -> Result<LeafIdentity, PkiError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::BadChain(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => names.push(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
                    16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(bytes);
                        names.push(std::net::Ipv6Addr::from(octets).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(LeafIdentity {
        names,
        serial_hex: crate::hex(cert.raw_serial()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_base64_with_line_breaks_and_bounded() {
        assert_eq!(decode_est_body(b"AQID\r\nBA==\n").unwrap(), [1, 2, 3, 4]);
        assert!(decode_est_body(b"not base64!").is_err());
        assert!(decode_est_body(&vec![b'A'; MAX_EST_BODY + 4]).is_err());
    }
}
