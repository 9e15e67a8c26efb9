//! Parsing of the names and TXT values handed to providers, so every provider sees the same form.

use hickory_proto::rr::Name;

use crate::DnsError;

/// Longest TXT value a single character-string can carry (RFC 1035 §3.3).
const MAX_TXT_STRING_LEN: usize = 255;

/// Parses `fqdn`, with or without its trailing dot, into an absolute name.
pub(crate) fn parse_fqdn(fqdn: &str) -> Result<Name, DnsError> {
    let trimmed = fqdn.trim();
    let invalid = |reason: String| DnsError::InvalidName {
        name: fqdn.to_owned(),
        reason,
    };
    if trimmed.is_empty() || trimmed == "." {
        return Err(invalid("the name is empty".to_owned()));
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| invalid(e.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

/// `name` as text with its trailing dot, the form lego's exec hooks receive.
pub(crate) fn with_trailing_dot(name: &Name) -> String {
    let text = name.to_ascii();
    if text.ends_with('.') { text } else { format!("{text}.") }
}

/// `name` as text without its trailing dot, the form HTTP APIs use.
pub(crate) fn without_trailing_dot(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

/// Checks that `value` fits one TXT string; ACME values (43 base64url characters) always do.
pub(crate) fn check_txt_value(value: &str) -> Result<(), DnsError> {
    if value.is_empty() {
        return Err(DnsError::InvalidValue("the value is empty".to_owned()));
    }
    if value.len() > MAX_TXT_STRING_LEN {
        return Err(DnsError::InvalidValue(format!(
            "{} bytes is longer than one TXT string ({MAX_TXT_STRING_LEN} bytes)",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(DnsError::InvalidValue(
            "the value contains control characters".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_dot_is_optional() {
        let with = parse_fqdn("_acme-challenge.www.example.test.").unwrap();
        let without = parse_fqdn("_acme-challenge.www.example.test").unwrap();
        assert_eq!(with, without);
        assert_eq!(with_trailing_dot(&without), "_acme-challenge.www.example.test.");
        assert_eq!(without_trailing_dot(&with), "_acme-challenge.www.example.test");
    }

    #[test]
    fn empty_names_and_long_values_are_refused() {
        assert!(parse_fqdn(" ").is_err());
        assert!(parse_fqdn(".").is_err());
        assert!(check_txt_value("").is_err());
        assert!(check_txt_value(&"a".repeat(256)).is_err());
        assert!(check_txt_value("line\nbreak").is_err());
        assert!(check_txt_value("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0").is_ok());
    }
}
