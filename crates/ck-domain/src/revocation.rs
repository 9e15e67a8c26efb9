//! RFC 5280 §5.3.1 revocation reason codes.

use std::fmt;
use std::str::FromStr;

/// Why a certificate was revoked. The numeric codes are those of RFC 5280 (7 is unused there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RevocationReason {
    /// No reason given (code 0).
    #[default]
    Unspecified,
    /// The private key is known or suspected to be compromised (1).
    KeyCompromise,
    /// A CA key was compromised (2).
    CaCompromise,
    /// The subject's name or other information changed (3).
    AffiliationChanged,
    /// The certificate was replaced (4).
    Superseded,
    /// The certificate is no longer needed (5).
    CessationOfOperation,
    /// Temporarily on hold (6).
    CertificateHold,
    /// Released from hold (8).
    RemoveFromCrl,
    /// A privilege was withdrawn (9).
    PrivilegeWithdrawn,
    /// An attribute authority was compromised (10).
    AaCompromise,
}

/// A revocation reason name that RFC 5280 does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason '{0}' (expected one of: unspecified, keyCompromise, caCompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, removeFromCRL, privilegeWithdrawn, aaCompromise)"
)]
pub struct UnknownRevocationReason(pub String);

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [Self; 10] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::CertificateHold,
        Self::RemoveFromCrl,
        Self::PrivilegeWithdrawn,
        Self::AaCompromise,
    ];

    /// The RFC 5280 name, as used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "caCompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aaCompromise",
        }
    }

    /// The RFC 5280 CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::RemoveFromCrl => 8,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = UnknownRevocationReason;
    fn from_str(s: &str) -> Result<Self, UnknownRevocationReason> {
        let wanted: String = s.chars().filter(|c| *c != '-' && *c != '_').collect();
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str().eq_ignore_ascii_case(&wanted) || reason.code().to_string() == wanted)
            .ok_or_else(|| UnknownRevocationReason(s.to_owned()))
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which versions of a certificate a revocation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationScope {
    /// Every version not expired yet (and the current one even if it has): an older version
    /// stays trusted by every client until it expires, so revoking only the newest one would
    /// leave a compromised key usable.
    #[default]
    Unexpired,
    /// One version; the certificate stays active unless it is the current one.
    Version(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_codes_and_spellings() {
        for reason in RevocationReason::ALL {
            assert_eq!(reason.as_str().parse(), Ok(reason));
            assert_eq!(reason.code().to_string().parse(), Ok(reason));
        }
        assert_eq!("key-compromise".parse(), Ok(RevocationReason::KeyCompromise));
        assert_eq!("KEYCOMPROMISE".parse(), Ok(RevocationReason::KeyCompromise));
        assert!("7".parse::<RevocationReason>().is_err());
        assert!("stolen".parse::<RevocationReason>().is_err());
    }
}
