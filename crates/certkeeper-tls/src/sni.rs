//! The SNI rule as pure functions and a name index, with no TLS and no locking.
//!
//! Names are compared in one canonical form: lowercase A-labels (punycode) without a trailing
//! dot. Certificate names are put in that form once, when the certificate is loaded; the
//! client's name is put in that form on every lookup, which is why the common case (a name that
//! already is canonical, as rustls hands it over) is checked byte by byte and borrowed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Puts a DNS name into the canonical form, or returns `None` for a name that cannot be one
/// (empty, an empty label, or IDNA that does not convert).
///
/// A leading `*.` is kept so that wildcard certificate names can use the same function.
pub(crate) fn normalize(name: &str) -> Option<Cow<'_, str>> {
    let bytes = name.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.last() != Some(&b'.')
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*'));
    if canonical {
        return Some(Cow::Borrowed(name));
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return None;
    }
    let owned = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        // `*` is not a valid IDNA code point, so a wildcard's first label must stay out of the conversion.
        match trimmed.strip_prefix("*.") {
            Some(rest) => format!("*.{}", idna::domain_to_ascii(rest).ok()?),
            None => idna::domain_to_ascii(trimmed).ok()?,
        }
    };
    if owned.is_empty() || owned.split('.').any(str::is_empty) {
        return None;
    }
    Some(Cow::Owned(owned))
}

/// What a certificate name means for lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern<'a> {
    /// Matches this name only.
    Exact(&'a str),
    /// `*.parent`: matches any name of exactly one more label under `parent`.
    Wildcard(&'a str),
}

/// Classifies a canonical certificate name; `None` for names no client name can match
/// (partial-label wildcards such as `f*.example.com`, or a bare `*`).
pub(crate) fn pattern(name: &str) -> Option<Pattern<'_>> {
    match name.strip_prefix("*.") {
        Some(parent) if !parent.is_empty() && !parent.contains('*') => Some(Pattern::Wildcard(parent)),
        Some(_) => None,
        None if name.contains('*') || name.is_empty() => None,
        None => Some(Pattern::Exact(name)),
    }
}

/// True if the canonical certificate names cover the canonical client name.
pub(crate) fn covers(cert_names: &[String], name: &str) -> bool {
    if cert_names.iter().any(|n| n == name) {
        return true;
    }
    match name.split_once('.') {
        Some((label, parent)) if !label.is_empty() && !label.contains('*') => cert_names
            .iter()
            .any(|n| n.strip_prefix("*.").is_some_and(|p| p == parent)),
        _ => false,
    }
}

/// Names to values, built once per snapshot and then only read.
///
/// Two hash maps make a lookup two hash probes at most, whatever the number of names.
#[derive(Debug)]
pub(crate) struct NameIndex<V> {
    exact: HashMap<Box<str>, V>,
    /// Keyed by the wildcard's parent: `*.example.com` is stored under `example.com`.
    wildcard: HashMap<Box<str>, V>,
}

impl<V> Default for NameIndex<V> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<V: Clone> NameIndex<V> {
    /// Builds the index from candidates given in order of preference: for a name claimed by
    /// several candidates, the first one wins.
    pub(crate) fn build<'a>(candidates: impl IntoIterator<Item = (&'a [String], V)>) -> Self {
        let mut index = Self::default();
        for (names, value) in candidates {
            for name in names {
                let (map, key) = match pattern(name) {
                    Some(Pattern::Exact(key)) => (&mut index.exact, key),
                    Some(Pattern::Wildcard(key)) => (&mut index.wildcard, key),
                    None => continue,
                };
                if let Entry::Vacant(slot) = map.entry(Box::from(key)) {
                    slot.insert(value.clone());
                }
            }
        }
        index.exact.shrink_to_fit();
        index.wildcard.shrink_to_fit();
        index
    }
}

impl<V> NameIndex<V> {
    /// The value for a client name (any case, trailing dot, U-labels): exact name first, then
    /// the wildcard one label up.
    pub(crate) fn lookup(&self, name: &str) -> Option<&V> {
        let name = normalize(name)?;
        let name: &str = &name;
        if let Some(value) = self.exact.get(name) {
            return Some(value);
        }
        let (label, parent) = name.split_once('.')?;
        if label.is_empty() || label.contains('*') || parent.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }

    /// Number of distinct exact and wildcard names.
    pub(crate) fn name_count(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    fn index() -> NameIndex<&'static str> {
        let apex = names(&["example.com"]);
        let wild = names(&["*.example.com"]);
        let www = names(&["www.example.com", "*.b.example.com"]);
        NameIndex::build([(&apex[..], "apex"), (&wild[..], "wild"), (&www[..], "www")])
    }

    #[test]
    fn canonical_names_are_borrowed() {
        assert!(matches!(
            normalize("a.example.com"),
            Some(Cow::Borrowed("a.example.com"))
        ));
        assert!(matches!(normalize("*.example.com"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn case_trailing_dot_and_idna_are_normalized() {
        assert_eq!(normalize("A.Example.COM").as_deref(), Some("a.example.com"));
        assert_eq!(normalize("a.example.com.").as_deref(), Some("a.example.com"));
        assert_eq!(normalize("bücher.example").as_deref(), Some("xn--bcher-kva.example"));
        assert_eq!(
            normalize("*.Bücher.example").as_deref(),
            Some("*.xn--bcher-kva.example")
        );
        assert_eq!(normalize("").as_deref(), None);
        assert_eq!(normalize(".").as_deref(), None);
        assert_eq!(normalize("A..b").as_deref(), None);
    }

    #[test]
    fn exact_beats_wildcard() {
        let index = index();
        assert_eq!(index.lookup("example.com"), Some(&"apex"));
        assert_eq!(index.lookup("www.example.com"), Some(&"www"));
        assert_eq!(index.lookup("a.example.com"), Some(&"wild"));
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let wild = names(&["*.example.com"]);
        let index = NameIndex::build([(&wild[..], "wild")]);
        assert_eq!(index.lookup("a.example.com"), Some(&"wild"));
        assert_eq!(index.lookup("example.com"), None);
        assert_eq!(index.lookup("b.a.example.com"), None);
        assert_eq!(index.lookup(".example.com"), None);
        assert_eq!(index.lookup("*.example.com"), None);
        assert_eq!(index.lookup("aexample.com"), None);
    }

    #[test]
    fn nested_wildcard_is_its_own_parent() {
        let index = index();
        assert_eq!(index.lookup("x.b.example.com"), Some(&"www"));
        assert_eq!(index.lookup("b.example.com"), Some(&"wild"));
    }

    #[test]
    fn lookups_are_case_insensitive_and_ignore_trailing_dot() {
        let index = index();
        assert_eq!(index.lookup("WWW.Example.Com."), Some(&"www"));
        assert_eq!(index.lookup("Q.EXAMPLE.COM"), Some(&"wild"));
    }

    #[test]
    fn idna_names_match_their_a_labels() {
        let cert = names(&["xn--bcher-kva.example", "*.xn--bcher-kva.example"]);
        let index = NameIndex::build([(&cert[..], "idn")]);
        assert_eq!(index.lookup("bücher.example"), Some(&"idn"));
        assert_eq!(index.lookup("shop.BÜCHER.example"), Some(&"idn"));
    }

    #[test]
    fn first_candidate_wins_a_shared_name() {
        let first = names(&["a.test", "*.test"]);
        let second = names(&["a.test", "b.test", "*.test"]);
        let index = NameIndex::build([(&first[..], 1), (&second[..], 2)]);
        assert_eq!(index.lookup("a.test"), Some(&1));
        assert_eq!(index.lookup("b.test"), Some(&2));
        assert_eq!(index.lookup("z.test"), Some(&1));
        assert_eq!(index.name_count(), 3);
    }

    #[test]
    fn unusable_patterns_are_not_indexed() {
        assert_eq!(pattern("f*.example.com"), None);
        assert_eq!(pattern("*"), None);
        assert_eq!(pattern("*.*.example.com"), None);
        assert_eq!(pattern("*.example.com"), Some(Pattern::Wildcard("example.com")));
    }

    #[test]
    fn covers_follows_the_same_rule() {
        let cert = names(&["example.com", "*.example.com"]);
        assert!(covers(&cert, "example.com"));
        assert!(covers(&cert, "a.example.com"));
        assert!(!covers(&cert, "b.a.example.com"));
        assert!(!covers(&cert, "example.org"));
    }
}
