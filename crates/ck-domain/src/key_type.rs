//! Key algorithms a certificate (or a CA) can use.

use std::fmt;
use std::str::FromStr;

/// The algorithm and size of a key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256: the default, fast and universally supported.
    #[default]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
}

/// A key type name that is not one of [`KeyType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key type '{0}' (expected one of: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096)")]
pub struct UnknownKeyType(pub String);

impl KeyType {
    /// Every supported key type, in the order they are documented.
    pub const ALL: [Self; 6] = [
        Self::EcdsaP256,
        Self::EcdsaP384,
        Self::Ed25519,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
    ];

    /// The canonical name used in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    /// RSA keys take tens to thousands of milliseconds to generate; callers move that work off
    /// latency-sensitive threads.
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072 | Self::Rsa4096)
    }
}

impl FromStr for KeyType {
    type Err = UnknownKeyType;
    fn from_str(s: &str) -> Result<Self, UnknownKeyType> {
        let normalized = s.trim().to_ascii_lowercase().replace('_', "-");
        let key_type = match normalized.as_str() {
            "ecdsa-p256" | "p256" | "p-256" | "ec256" | "ecdsa" | "ec" => Self::EcdsaP256,
            "ecdsa-p384" | "p384" | "p-384" | "ec384" => Self::EcdsaP384,
            "ed25519" => Self::Ed25519,
            "rsa-2048" | "rsa2048" | "rsa" => Self::Rsa2048,
            "rsa-3072" | "rsa3072" => Self::Rsa3072,
            "rsa-4096" | "rsa4096" => Self::Rsa4096,
            _ => return Err(UnknownKeyType(s.to_owned())),
        };
        Ok(key_type)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for key_type in KeyType::ALL {
            assert_eq!(key_type.as_str().parse::<KeyType>(), Ok(key_type));
        }
        assert_eq!("P256".parse::<KeyType>(), Ok(KeyType::EcdsaP256));
        assert_eq!("RSA_4096".parse::<KeyType>(), Ok(KeyType::Rsa4096));
        assert!("dsa".parse::<KeyType>().is_err());
    }
}
