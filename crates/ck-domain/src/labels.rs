//! Labels: small key/value tags for selecting certificates (by team, environment, agent…).

use std::collections::BTreeMap;

/// A label that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Keys are short slugs so they can appear in selectors and metrics.
    #[error("label key '{0}' is invalid (1-63 characters of a-z, A-Z, 0-9, '-', '_', '.', '/')")]
    BadKey(String),
    /// Values are bounded to keep rows small.
    #[error("label '{0}' has a value longer than 255 characters")]
    ValueTooLong(String),
    /// Bounded to keep rows small.
    #[error("too many labels ({0}; at most 64)")]
    TooMany(usize),
}

/// Validated labels, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Validates every key and value.
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, LabelError> {
        if map.len() > 64 {
            return Err(LabelError::TooMany(map.len()));
        }
        for (key, value) in &map {
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
            if !key_ok {
                return Err(LabelError::BadKey(key.clone()));
            }
            if value.len() > 255 {
                return Err(LabelError::ValueTooLong(key.clone()));
            }
        }
        Ok(Self(map))
    }

    /// The labels as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Consumes the labels.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_keys_and_values() {
        let ok = BTreeMap::from([
            ("team".to_owned(), "web".to_owned()),
            ("k8s.io/app".to_owned(), String::new()),
        ]);
        assert!(Labels::new(ok).is_ok());
        let bad = BTreeMap::from([("bad key".to_owned(), "x".to_owned())]);
        assert_eq!(Labels::new(bad), Err(LabelError::BadKey("bad key".to_owned())));
        let long = BTreeMap::from([("k".to_owned(), "x".repeat(256))]);
        assert_eq!(Labels::new(long), Err(LabelError::ValueTooLong("k".to_owned())));
    }
}
