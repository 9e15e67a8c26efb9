//! A string that must never be shown: TSIG secrets, API tokens, secret environment values.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a [`Secret`] serializes as: settings shown by an API go through serde, so every value
/// held in this type is hidden there by its type, whatever the field it sits in is called.
pub const REDACTED: &str = "[redacted]";

/// A secret value whose `Debug` output and serialization are redacted, so that a config or
/// provider printed in a log, an error or an API answer never carries it. It deliberately has
/// no `Display`; [`Secret::expose`] is the one way to the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    // Serialization is for showing settings; storage keeps the text the operator gave.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialization_hide_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }
}
