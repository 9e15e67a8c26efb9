//! Subject alternative names: DNS names (with the wildcard rules of RFC 6125 §6.4.3 as CAs
//! apply them) and IP addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A name that may not go into a certificate, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing was given.
    #[error("empty name")]
    Empty,
    /// Longer than the 253 characters DNS allows.
    #[error("'{0}' is longer than 253 characters")]
    TooLong(String),
    /// A label is empty (two dots in a row, or a leading dot).
    #[error("'{0}' has an empty label (check for '..' or a leading dot)")]
    EmptyLabel(String),
    /// A label is longer than 63 characters.
    #[error("'{name}' has a label longer than 63 characters: '{label}'")]
    LabelTooLong {
        /// The whole name.
        name: String,
        /// The offending label.
        label: String,
    },
    /// A label holds a character outside letters, digits and hyphens.
    #[error("'{name}' has an invalid character {character:?} (DNS labels allow a-z, 0-9 and '-')")]
    BadCharacter {
        /// The whole name.
        name: String,
        /// The offending character.
        character: char,
    },
    /// A label starts or ends with a hyphen.
    #[error("'{0}' has a label that starts or ends with '-'")]
    BadHyphen(String),
    /// The wildcard is not a whole left-most label, or covers too much.
    #[error(
        "'{0}' misuses the wildcard: only a whole left-most label '*' is allowed, followed by at least two labels (as in *.example.com)"
    )]
    BadWildcard(String),
    /// An internationalized name that IDNA cannot convert.
    #[error("'{0}' is not a valid internationalized domain name")]
    BadIdna(String),
    /// The top-level label is all digits, which makes it look like an IP address.
    #[error("'{0}' has an all-numeric last label; write IP addresses in plain dotted or colon form")]
    NumericTld(String),
}

/// A DNS name in canonical form: A-labels, lower case, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Parses a DNS name, converting internationalized labels to A-labels (IDNA) and lower case.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let trimmed = input.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        let (wildcard, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let ascii = if rest.is_ascii() {
            rest.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(rest).map_err(|_| NameError::BadIdna(input.to_owned()))?
        };
        let name = if wildcard { format!("*.{ascii}") } else { ascii.clone() };
        if name.len() > 253 {
            return Err(NameError::TooLong(name));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        for label in &labels {
            if label.is_empty() {
                return Err(NameError::EmptyLabel(name));
            }
            if label.len() > 63 {
                return Err(NameError::LabelTooLong {
                    name: name.clone(),
                    label: (*label).to_owned(),
                });
            }
            if let Some(character) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
                if character == '*' {
                    return Err(NameError::BadWildcard(name));
                }
                return Err(NameError::BadCharacter { name, character });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(NameError::BadHyphen(name));
            }
        }
        // A wildcard must leave at least a registrable-looking base ("*.com" would cover a TLD).
        if wildcard && labels.len() < 2 {
            return Err(NameError::BadWildcard(name));
        }
        if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err(NameError::NumericTld(name));
        }
        Ok(Self(name))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the left-most label is `*`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of a certificate's subjectAltName extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectAltName {
    /// A DNS name (possibly a wildcard).
    Dns(DnsName),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl SubjectAltName {
    /// Parses an IP address if the text is one, else a DNS name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let trimmed = input.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        DnsName::parse(trimmed).map(Self::Dns)
    }
}

impl FromStr for SubjectAltName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => fmt::Display::fmt(name, f),
            Self::Ip(ip) => fmt::Display::fmt(ip, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = SubjectAltName::parse(input)
            .map(|n| n.to_string())
            .map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(name), Ok(want)) => assert_eq!(name, want, "input {input:?}"),
            (Err(err), Err(want)) => assert!(err.contains(want), "input {input:?}: error {err:?} lacks {want:?}"),
            (got, want) => panic!("input {input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn accepts_and_canonicalizes() {
        check("App.Internal.", Ok("app.internal"));
        check("localhost", Ok("localhost"));
        check("*.example.com", Ok("*.example.com"));
        check("xn--bcher-kva.example", Ok("xn--bcher-kva.example"));
        check("bücher.example", Ok("xn--bcher-kva.example"));
        check("10.0.0.1", Ok("10.0.0.1"));
        check("[::1]", Ok("::1"));
        check("a-b.c-d.example", Ok("a-b.c-d.example"));
    }

    #[test]
    fn rejects_bad_names() {
        check("", Err("empty"));
        check("a..b", Err("empty label"));
        check(".a.b", Err("empty label"));
        check("-a.example", Err("starts or ends with '-'"));
        check("a_b.example", Err("invalid character '_'"));
        check("exa mple.com", Err("invalid character ' '"));
        check(&format!("{}.com", "a".repeat(64)), Err("longer than 63"));
        check(&format!("{}.com", "a.".repeat(130)), Err("longer than 253"));
        check("1.2.3.999", Err("all-numeric"));
    }

    #[test]
    fn rejects_wildcard_misuse() {
        check("*.com", Err("wildcard"));
        check("*", Err("wildcard"));
        check("a.*.example.com", Err("wildcard"));
        check("f*o.example.com", Err("wildcard"));
        check("*.*.example.com", Err("wildcard"));
        check("**.example.com", Err("wildcard"));
    }
}
