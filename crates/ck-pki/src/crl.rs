//! Certificate revocation lists (RFC 5280 §5) signed by the local CA's intermediate.

use ck_domain::RevocationReason;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use crate::{LocalCa, PkiError};

/// One revoked certificate, as a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// The certificate's serial, hex (as stored: lowercase, no separators).
    pub serial_hex: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why.
    pub reason: RevocationReason,
}

/// What to sign.
#[derive(Debug, Clone)]
pub struct CrlRequest<'a> {
    /// The CRL number: strictly increasing per issuer (RFC 5280 §5.2.3).
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate: relying parties fetch a new one by then.
    pub next_update: OffsetDateTime,
    /// The revoked certificates.
    pub revoked: &'a [RevokedSerial],
}

fn reason_code(reason: RevocationReason) -> rcgen::RevocationReason {
    use rcgen::RevocationReason as R;
    match reason {
        RevocationReason::Unspecified => R::Unspecified,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::CaCompromise => R::CaCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::CertificateHold => R::CertificateHold,
        RevocationReason::RemoveFromCrl => R::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => R::AaCompromise,
    }
}

fn serial_from_hex(hex: &str) -> Result<SerialNumber, PkiError> {
    if hex.is_empty() || hex.len() > 40 || !hex.len().is_multiple_of(2) {
        return Err(PkiError::Signing(format!("serial '{hex}' is not 1 to 20 hex octets")));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| PkiError::Signing(format!("serial '{hex}' is not hex")))?;
    Ok(SerialNumber::from_slice(&bytes))
}

impl LocalCa {
    /// Signs a CRL (DER) listing `request.revoked`, each with its reason code. The reason
    /// `unspecified` is written as no reason, as RFC 5280 §5.3.1 asks.
    pub fn sign_crl(&self, request: &CrlRequest<'_>) -> Result<Vec<u8>, PkiError> {
        let revoked_certs = request
            .revoked
            .iter()
            .map(|entry| {
                Ok(RevokedCertParams {
                    serial_number: serial_from_hex(&entry.serial_hex)?,
                    revocation_time: entry.revoked_at,
                    reason_code: (entry.reason != RevocationReason::Unspecified).then(|| reason_code(entry.reason)),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: request.this_update,
            next_update: request.next_update,
            crl_number: SerialNumber::from_slice(&request.number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(self.issuer())
            .map_err(|e| PkiError::Signing(format!("CRL: {e}")))?;
        Ok(crl.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_must_be_hex_octets() {
        assert!(serial_from_hex("40ab").is_ok());
        for bad in ["", "4", "zz", &"ab".repeat(21)] {
            assert!(serial_from_hex(bad).is_err(), "{bad}");
        }
    }
}
