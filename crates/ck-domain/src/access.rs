//! Who may do what: token scopes, restrictions of a token to some certificates, and token
//! lifetimes. Pure rules; the API layer decides which scope each route needs.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::{DnsName, Labels};

/// One permission a token can carry. Each scope is independent: `admin` does not imply `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read certificates (public parts), versions, jobs, issuers, agents.
    Read,
    /// Create certificates.
    Create,
    /// Change certificates: renew.
    Update,
    /// Delete and revoke certificates.
    Delete,
    /// Tokens, issuers, agents' registration, the audit trail.
    Admin,
    /// The agent protocol (only agents' own tokens carry it).
    Agent,
    /// Download server-held private keys (PEM key, PKCS#12).
    ExportKey,
    /// Scrape `/metrics`. Last, so the bits of the scopes before it keep their places.
    Metrics,
}

impl Scope {
    /// Every scope, in their canonical order.
    pub const ALL: [Scope; 8] = [
        Scope::Read,
        Scope::Create,
        Scope::Update,
        Scope::Delete,
        Scope::Admin,
        Scope::Agent,
        Scope::ExportKey,
        Scope::Metrics,
    ];

    /// The API and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::ExportKey => "export-key",
            Self::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope '{0}' (expected read, create, update, delete, admin, agent, export-key or metrics)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| UnknownScope(s.trim().to_owned()))
    }
}

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);

    /// What the bootstrap admin token carries: everything an operator can do.
    pub fn operator() -> Self {
        Self::ALL_BUT_AGENT
    }

    // Eight scopes fill the eight bits: every bit but the agent's.
    const ALL_BUT_AGENT: Scopes = Scopes(!(1 << (Scope::Agent as u8)));

    /// A set of one scope.
    pub fn only(scope: Scope) -> Self {
        Self(scope.bit())
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether every scope of `other` is in the set.
    pub fn includes(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The stored and wire spelling: names joined by commas.
    pub fn to_list(self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list().join(","))
    }
}

impl FromStr for Scopes {
    type Err = UnknownScope;
    /// A comma-separated list (`read,create`); empty items are ignored.
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        s.split(',')
            .filter(|item| !item.trim().is_empty())
            .map(str::parse)
            .collect()
    }
}

/// Limits a token to some certificates: those carrying every given label, and whose names all
/// lie under one of the given DNS suffixes. An empty restriction permits every certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restriction {
    labels: BTreeMap<String, String>,
    name_suffixes: Vec<String>,
}

/// A restriction that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestrictionError {
    /// A suffix that is not a DNS name.
    #[error("name suffix '{0}' is not a DNS name (e.g. team-a.example.com)")]
    BadSuffix(String),
    /// The labels themselves are invalid.
    #[error(transparent)]
    Label(#[from] crate::LabelError),
}

impl Restriction {
    /// Validates the labels and suffixes (a leading `.` or `*.` on a suffix is accepted and
    /// dropped: suffixes always match whole labels).
    pub fn new(labels: BTreeMap<String, String>, name_suffixes: Vec<String>) -> Result<Self, RestrictionError> {
        let labels = Labels::new(labels)?.into_map();
        let mut suffixes = Vec::with_capacity(name_suffixes.len());
        for suffix in name_suffixes {
            let bare = suffix.trim().trim_start_matches("*.").trim_start_matches('.');
            let name = DnsName::parse(bare).map_err(|_| RestrictionError::BadSuffix(suffix.trim().to_owned()))?;
            suffixes.push(name.as_str().to_owned());
        }
        suffixes.sort();
        suffixes.dedup();
        Ok(Self {
            labels,
            name_suffixes: suffixes,
        })
    }

    /// Whether the restriction permits everything.
    pub fn is_unrestricted(&self) -> bool {
        self.labels.is_empty() && self.name_suffixes.is_empty()
    }

    /// The labels a certificate must carry.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The suffixes all names must end with.
    pub fn name_suffixes(&self) -> &[String] {
        &self.name_suffixes
    }

    /// Whether a certificate with these labels and names is within reach.
    pub fn permits<'a>(&self, labels: &BTreeMap<String, String>, names: impl IntoIterator<Item = &'a str>) -> bool {
        self.reaches_labels(labels)
            && (self.name_suffixes.is_empty() || names.into_iter().all(|n| self.name_permitted(n)))
    }

    /// Whether something without names (an agent) carrying `labels` lies within: it carries
    /// every label of the restriction. Name suffixes say nothing about it, so a restriction by
    /// suffixes alone reaches everything unnamed.
    pub fn reaches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Whether one DNS name (or wildcard) lies under a permitted suffix, on a label boundary.
    pub fn name_permitted(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let name = name.strip_prefix("*.").unwrap_or(&name);
        self.name_suffixes.is_empty()
            || self.name_suffixes.iter().any(|suffix| {
                name == suffix.as_str()
                    || (name.len() > suffix.len()
                        && name.ends_with(suffix.as_str())
                        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
            })
    }

    /// The labels a new certificate gets: its own plus the restriction's. `Err` names a label
    /// whose value the restriction contradicts.
    pub fn apply_labels(&self, mut labels: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
        for (key, value) in &self.labels {
            match labels.get(key) {
                Some(existing) if existing != value => return Err(key.clone()),
                Some(_) => {}
                None => {
                    labels.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(labels)
    }

    /// Whether `other` reaches no certificate that `self` does not: it has all of our labels,
    /// and each of its suffixes lies under one of ours.
    pub fn is_within(&self, other: &Restriction) -> bool {
        let labels_ok = self.labels.iter().all(|(k, v)| other.labels.get(k) == Some(v));
        let suffixes_ok = self.name_suffixes.is_empty()
            || (!other.name_suffixes.is_empty() && other.name_suffixes.iter().all(|s| self.name_permitted(s)));
        labels_ok && suffixes_ok
    }
}

/// A token lifetime such as `30d`, `12h`, `90m` or `3600s`, in seconds.
pub fn parse_lifetime(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let error = || format!("'{text}' is not a lifetime (a number with s, m, h, d or w: e.g. 30d, 12h)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| error())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(error()),
    };
    let seconds = number.checked_mul(unit_seconds).ok_or_else(error)?;
    if seconds <= 0 || seconds > 10 * 366 * 86_400 {
        return Err(format!("'{text}': a lifetime is between 1 second and 10 years"));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_and_compare() {
        let scopes: Scopes = "read, create,export-key".parse().unwrap();
        assert_eq!(scopes.to_string(), "read,create,export-key");
        assert!(scopes.contains(Scope::ExportKey) && !scopes.contains(Scope::Admin));
        assert!(Scopes::operator().includes(scopes));
        assert!(!scopes.includes(Scopes::operator()));
        assert!(!Scopes::operator().contains(Scope::Agent));
        assert!(Scopes::operator().contains(Scope::Metrics));
        assert_eq!("metrics".parse::<Scopes>().unwrap(), Scopes::only(Scope::Metrics));
        assert_eq!("".parse::<Scopes>().unwrap(), Scopes::NONE);
        assert_eq!("read,root".parse::<Scopes>(), Err(UnknownScope("root".into())));
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn restrictions_match_labels_and_whole_label_suffixes() {
        let r = Restriction::new(labels(&[("team", "a")]), vec![".a.example.com".into()]).unwrap();
        assert_eq!(r.name_suffixes(), ["a.example.com"]);
        let team_a = labels(&[("team", "a"), ("env", "prod")]);
        assert!(r.permits(&team_a, ["www.a.example.com", "a.example.com", "*.a.example.com"]));
        assert!(!r.permits(&team_a, ["www.a.example.com", "evila.example.com"]));
        assert!(!r.permits(&labels(&[("team", "b")]), ["www.a.example.com"]));
        assert!(!r.permits(&BTreeMap::new(), ["www.a.example.com"]));
        let any = Restriction::default();
        assert!(any.is_unrestricted() && any.permits(&BTreeMap::new(), ["x.example"]));
        assert!(Restriction::new(BTreeMap::new(), vec!["not a name".into()]).is_err());
    }

    #[test]
    fn restrictions_add_their_labels_and_nest() {
        let r = Restriction::new(labels(&[("team", "a")]), vec![]).unwrap();
        assert_eq!(
            r.apply_labels(labels(&[("env", "x")])).unwrap(),
            labels(&[("env", "x"), ("team", "a")])
        );
        assert_eq!(r.apply_labels(labels(&[("team", "b")])), Err("team".to_owned()));
        let narrower = Restriction::new(labels(&[("team", "a"), ("env", "x")]), vec!["a.example".into()]).unwrap();
        assert!(r.is_within(&narrower));
        assert!(!narrower.is_within(&r));
        assert!(Restriction::default().is_within(&r));
        let suffix = Restriction::new(BTreeMap::new(), vec!["example".into()]).unwrap();
        assert!(suffix.is_within(&narrower) && !suffix.is_within(&r));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d"), Ok(30 * 86_400));
        assert_eq!(parse_lifetime("90m"), Ok(5_400));
        assert_eq!(parse_lifetime("2w"), Ok(14 * 86_400));
        assert!(parse_lifetime("30").is_err());
        assert!(parse_lifetime("d").is_err());
        assert!(parse_lifetime("0s").is_err());
        assert!(parse_lifetime("99999999999999d").is_err());
    }
}
