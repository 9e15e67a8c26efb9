//! Managed certificates, their versions, and the rules a new issuance request must pass.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime};

use crate::{
    CertificateId, ExpiryThresholds, IssuerId, JobId, KeyType, Labels, NameError, RenewalPolicy, RevocationReason,
    SubjectAltName,
};

/// Where a managed certificate is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateStatus {
    /// Created; the first issuance has not finished yet.
    Pending,
    /// Issued and usable (renewals keep it active).
    Active,
    /// Issued and usable, but its renewal is late: the current version has crossed one of its
    /// expiry thresholds. A new version makes it active again.
    Expiring,
    /// The first issuance failed for good (see `last_error`).
    Failed,
    /// Revoked by an operator.
    Revoked,
    /// Past `not_after` with no successful renewal.
    Expired,
}

impl CertificateStatus {
    /// Every status.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Active,
        Self::Expiring,
        Self::Failed,
        Self::Revoked,
        Self::Expired,
    ];

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expiring => "expiring",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

impl FromStr for CertificateStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown certificate status '{s}' (expected pending, active, expiring, failed, revoked or expired)"
                )
            })
    }
}

impl fmt::Display for CertificateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds the private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The server generates the key and keeps it (readable with the right token).
    Server,
    /// The client sent a CSR; the server never sees the key.
    Csr,
    /// The certificate's agent makes a key on its host and sends a CSR for every version; the
    /// server never sees the key, and a job waits until the agent's CSR arrives.
    Agent,
}

impl KeySource {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Csr => "csr",
            Self::Agent => "agent",
        }
    }
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(Self::Server),
            "csr" => Ok(Self::Csr),
            "agent" => Ok(Self::Agent),
            other => Err(format!("unknown key source '{other}' (expected server or agent)")),
        }
    }
}

/// A managed certificate: a stable identity (names, issuer, policy) whose issued versions change
/// over time. The fields of the current version are copied here for listing and scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    /// Stable id.
    pub id: CertificateId,
    /// Human name (defaults to the common name).
    pub name: String,
    /// The subject common name; also the first SAN.
    pub common_name: String,
    /// Every subjectAltName, the common name first.
    pub sans: Vec<SubjectAltName>,
    /// Which issuer signs it.
    pub issuer_id: IssuerId,
    /// The key algorithm (of server-generated keys; informational in CSR mode).
    pub key_type: KeyType,
    /// Who holds the key.
    pub key_source: KeySource,
    /// The CSR: in CSR mode the client's (re-signed on renewal: same key, new certificate); in
    /// agent mode the agent's CSR for the next version, cleared once that version is signed.
    pub csr_pem: Option<String>,
    /// ACME challenge type for this certificate (`http-01`, `tls-alpn-01`, `dns-01`), overriding
    /// the issuer's default; `None` for the default and for non-ACME issuers.
    pub challenge: Option<String>,
    /// The agent (id) that deploys it and, with [`KeySource::Agent`], makes its keys.
    pub agent_id: Option<String>,
    /// Lifecycle status.
    pub status: CertificateStatus,
    /// Requested lifetime of each version.
    pub validity: Duration,
    /// When renewal starts.
    pub renewal_policy: RenewalPolicy,
    /// Days before expiry at which it warns; `None`: the server's default.
    pub expiry_thresholds: Option<ExpiryThresholds>,
    /// Tags.
    pub labels: Labels,
    /// Whether its leaves carry the clientAuth extended key usage (serverAuth always). Off
    /// unless asked for: a leaf usable as a client certificate is a credential.
    pub client_auth: bool,
    /// The current version's number (0 before the first issuance).
    pub current_version: u32,
    /// The current version's serial, hex.
    pub serial: Option<String>,
    /// SHA-256 of the current version's DER, hex.
    pub fingerprint: Option<String>,
    /// The current version's validity start.
    pub not_before: Option<OffsetDateTime>,
    /// The current version's expiry.
    pub not_after: Option<OffsetDateTime>,
    /// When the scheduler will renew it.
    pub renew_at: Option<OffsetDateTime>,
    /// The last issuance error, cleared on success.
    pub last_error: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
    /// Why it was revoked.
    pub revocation_reason: Option<RevocationReason>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

impl Certificate {
    /// Whether a job for it must wait: its agent has not sent the CSR for the next version yet.
    pub fn awaits_agent_csr(&self) -> bool {
        self.key_source == KeySource::Agent && self.csr_pem.is_none()
    }

    /// The status as a reader should see it at `now`: an active certificate past its expiry is
    /// expired even before any loop has noticed.
    pub fn status_at(&self, now: OffsetDateTime) -> CertificateStatus {
        match (self.status, self.not_after) {
            (CertificateStatus::Active | CertificateStatus::Expiring, Some(not_after)) if not_after <= now => {
                CertificateStatus::Expired
            }
            (status, _) => status,
        }
    }
}

/// One issued certificate of a managed certificate. Every version is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateVersion {
    /// The managed certificate.
    pub certificate_id: CertificateId,
    /// 1, 2, 3…
    pub version: u32,
    /// Serial number, hex.
    pub serial: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// The leaf, PEM.
    pub cert_pem: String,
    /// The leaf followed by the intermediates, PEM.
    pub chain_pem: String,
    /// The CSR it was signed from (server-made in server-key mode).
    pub csr_pem: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Expiry.
    pub not_after: OffsetDateTime,
    /// The job that issued it.
    pub job_id: JobId,
    /// When it was stored.
    pub created_at: OffsetDateTime,
}

/// An issuance request that breaks a rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// A name is malformed.
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    /// Neither the request nor the CSR names anything.
    #[error("no names given: pass a common name or SANs (or a CSR that contains them)")]
    NoNames,
    /// Bounded to keep certificates usable.
    #[error("too many names ({0}; at most 100)")]
    TooManyNames(usize),
    /// The CSR asks for a name the request did not approve.
    #[error(
        "the CSR asks for '{0}', which is not among the requested names; add it to the request or remove it from the CSR"
    )]
    CsrNameNotRequested(String),
    /// The issuer's name policy refuses it.
    #[error("'{name}' is not allowed by issuer policy: {why}")]
    NameNotAllowed {
        /// The refused name.
        name: String,
        /// Which rule refused it.
        why: String,
    },
    /// Validity out of range.
    #[error("validity of {0} days is out of range (1 to {1} days for this issuer)")]
    BadValidity(i64, i64),
}

/// Which names an issuer may certify.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamePolicy {
    /// When non-empty, every DNS name must equal or end in `.` + one of these.
    pub allowed_suffixes: Vec<String>,
    /// Whether `*.` names are allowed.
    pub deny_wildcards: bool,
    /// Whether IP SANs are refused outright.
    pub deny_ip_addresses: bool,
    /// Which IP SANs are allowed. Empty: none once `allowed_suffixes` restricts the names (an IP
    /// address is under no domain, so a domain allowlist must not let every address through),
    /// any otherwise.
    pub allowed_ip_ranges: Vec<IpRange>,
}

/// An IP network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

/// A malformed IP range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IP address or CIDR range (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)")]
pub struct IpRangeError(String);

impl IpRange {
    /// Whether `ip` lies in the range (an IPv4 address never lies in an IPv6 range, nor back).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let prefix = u32::from(self.prefix);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || IpRangeError(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl NamePolicy {
    fn check(&self, san: &SubjectAltName) -> Result<(), RequestError> {
        let refuse = |why: &str| {
            Err(RequestError::NameNotAllowed {
                name: san.to_string(),
                why: why.to_owned(),
            })
        };
        match san {
            SubjectAltName::Ip(_) if self.deny_ip_addresses => refuse("IP addresses are not allowed"),
            SubjectAltName::Ip(ip) if !self.allowed_ip_ranges.is_empty() => {
                if self.allowed_ip_ranges.iter().any(|range| range.contains(*ip)) {
                    Ok(())
                } else {
                    let ranges: Vec<String> = self.allowed_ip_ranges.iter().map(ToString::to_string).collect();
                    refuse(&format!("allowed IP ranges are {}", ranges.join(", ")))
                }
            }
            // An address is under no domain: with a domain allowlist it needs an explicit range.
            SubjectAltName::Ip(_) if !self.allowed_suffixes.is_empty() => refuse(&format!(
                "allowed domains are {} and no IP range is allowed (certificates.allowed_ip_ranges)",
                self.allowed_suffixes.join(", ")
            )),
            SubjectAltName::Ip(_) => Ok(()),
            SubjectAltName::Dns(name) => {
                if self.deny_wildcards && name.is_wildcard() {
                    return refuse("wildcards are not allowed");
                }
                let base = name.as_str().trim_start_matches("*.");
                let allowed = self.allowed_suffixes.is_empty()
                    || self.allowed_suffixes.iter().any(|suffix| {
                        let suffix = suffix.trim_start_matches('.');
                        base == suffix || base.ends_with(&format!(".{suffix}"))
                    });
                if allowed {
                    Ok(())
                } else {
                    refuse(&format!("allowed domains are {}", self.allowed_suffixes.join(", ")))
                }
            }
        }
    }
}

/// The validated names of a new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceRequest {
    /// The common name (the first SAN).
    pub common_name: String,
    /// Every SAN, common name first, no duplicates.
    pub sans: Vec<SubjectAltName>,
}

/// What a CSR asks for, as the PKI layer read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CsrNames {
    /// The subject CN, if any.
    pub common_name: Option<String>,
    /// The requested SANs.
    pub sans: Vec<SubjectAltName>,
}

impl IssuanceRequest {
    /// Settles the names of a certificate from the request and, in CSR mode, the CSR.
    ///
    /// Requested names win; a CSR may ask for fewer names but never for one the request does not
    /// list. Without requested names the CSR's names are used.
    pub fn resolve(
        common_name: Option<&str>,
        sans: &[String],
        csr: Option<&CsrNames>,
        policy: &NamePolicy,
    ) -> Result<Self, RequestError> {
        let mut names: Vec<SubjectAltName> = Vec::new();
        if let Some(common_name) = common_name.filter(|cn| !cn.trim().is_empty()) {
            names.push(SubjectAltName::parse(common_name)?);
        }
        for san in sans {
            names.push(SubjectAltName::parse(san)?);
        }
        if let Some(csr) = csr {
            let mut csr_names = Vec::new();
            // A CN that is not a host name (e.g. "My Server") is ignored, as browsers ignore it.
            if let Some(Ok(cn)) = csr.common_name.as_deref().map(SubjectAltName::parse) {
                csr_names.push(cn);
            }
            csr_names.extend(csr.sans.iter().cloned());
            if names.is_empty() {
                names = csr_names;
            } else {
                let approved: BTreeSet<&SubjectAltName> = names.iter().collect();
                if let Some(extra) = csr_names.iter().find(|name| !approved.contains(name)) {
                    return Err(RequestError::CsrNameNotRequested(extra.to_string()));
                }
            }
        }
        let mut seen = BTreeSet::new();
        names.retain(|name| seen.insert(name.clone()));
        if names.is_empty() {
            return Err(RequestError::NoNames);
        }
        if names.len() > 100 {
            return Err(RequestError::TooManyNames(names.len()));
        }
        for name in &names {
            policy.check(name)?;
        }
        Ok(Self {
            common_name: names[0].to_string(),
            sans: names,
        })
    }
}

/// The validity window of a new leaf: backdated a minute for clock skew, never past the issuing
/// CA's own expiry.
pub fn leaf_validity(
    now: OffsetDateTime,
    validity: Duration,
    max_validity: Duration,
    ca_not_after: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), RequestError> {
    if validity < Duration::days(1) || validity > max_validity {
        return Err(RequestError::BadValidity(
            validity.whole_days(),
            max_validity.whole_days(),
        ));
    }
    let not_before = now - Duration::minutes(1);
    let not_after = (now + validity).min(ca_not_after);
    Ok((not_before, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(request: &IssuanceRequest) -> String {
        request
            .sans
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn request_names_come_first_and_deduplicate() {
        let request = IssuanceRequest::resolve(
            Some("App.internal"),
            &["api.internal".into(), "app.internal".into(), "10.1.2.3".into()],
            None,
            &NamePolicy::default(),
        )
        .unwrap();
        assert_eq!(request.common_name, "app.internal");
        assert_eq!(names(&request), "app.internal,api.internal,10.1.2.3");
    }

    #[test]
    fn csr_names_are_used_or_must_be_approved() {
        let csr = CsrNames {
            common_name: Some("a.example".into()),
            sans: vec![SubjectAltName::parse("b.example").unwrap()],
        };
        let from_csr = IssuanceRequest::resolve(None, &[], Some(&csr), &NamePolicy::default()).unwrap();
        assert_eq!(names(&from_csr), "a.example,b.example");
        let narrower = IssuanceRequest::resolve(Some("a.example"), &[], Some(&csr), &NamePolicy::default());
        assert_eq!(narrower, Err(RequestError::CsrNameNotRequested("b.example".into())));
        let free_text_cn = CsrNames {
            common_name: Some("My Server".into()),
            sans: csr.sans.clone(),
        };
        let ok = IssuanceRequest::resolve(None, &[], Some(&free_text_cn), &NamePolicy::default()).unwrap();
        assert_eq!(names(&ok), "b.example");
    }

    #[test]
    fn policy_and_limits() {
        let policy = NamePolicy {
            allowed_suffixes: vec!["internal".into()],
            deny_wildcards: true,
            deny_ip_addresses: true,
            allowed_ip_ranges: Vec::new(),
        };
        assert!(IssuanceRequest::resolve(Some("a.internal"), &[], None, &policy).is_ok());
        let refused = |name: &str| {
            IssuanceRequest::resolve(Some(name), &[], None, &policy)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("a.example").contains("allowed domains are internal"));
        assert!(refused("*.x.internal").contains("wildcards"));
        assert!(refused("10.0.0.1").contains("IP addresses"));
        assert!(refused("notinternal").contains("allowed domains"));
        assert_eq!(
            IssuanceRequest::resolve(None, &[], None, &policy),
            Err(RequestError::NoNames)
        );
        let many: Vec<String> = (0..101).map(|i| format!("h{i}.internal")).collect();
        assert_eq!(
            IssuanceRequest::resolve(None, &many, None, &NamePolicy::default()),
            Err(RequestError::TooManyNames(101))
        );
    }

    #[test]
    fn ip_san_bypasses_allowed_domains_no_more() {
        let mut policy = NamePolicy {
            allowed_suffixes: vec!["internal".into()],
            ..NamePolicy::default()
        };
        let resolve = |policy: &NamePolicy, names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            IssuanceRequest::resolve(None, &names, None, policy).map_err(|e| e.to_string())
        };
        let refused = resolve(&policy, &["a.internal", "10.1.2.3"]).unwrap_err();
        assert!(refused.contains("'10.1.2.3' is not allowed"), "{refused}");
        assert!(refused.contains("allowed_ip_ranges"), "{refused}");
        assert!(resolve(&policy, &["a.internal", "::1"]).is_err());
        // Allowed only inside an explicit range.
        policy.allowed_ip_ranges = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(resolve(&policy, &["a.internal", "10.1.2.3", "2001:db8::7"]).is_ok());
        let outside = resolve(&policy, &["a.internal", "192.168.1.1"]).unwrap_err();
        assert!(
            outside.contains("allowed IP ranges are 10.0.0.0/8, 2001:db8::/32"),
            "{outside}"
        );
        assert!(resolve(&policy, &["a.internal", "2001:db9::1"]).is_err());
        // Without a domain allowlist addresses stay allowed, unless denied outright.
        let open = NamePolicy::default();
        assert!(resolve(&open, &["a.example", "10.1.2.3"]).is_ok());
        let denied = NamePolicy {
            deny_ip_addresses: true,
            allowed_ip_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            ..NamePolicy::default()
        };
        assert!(resolve(&denied, &["10.1.2.3"]).is_err());
    }

    #[test]
    fn ip_ranges_parse_and_match() {
        let range: IpRange = "10.20.0.0/16".parse().unwrap();
        assert!(range.contains("10.20.255.1".parse().unwrap()));
        assert!(!range.contains("10.21.0.1".parse().unwrap()));
        assert!(!range.contains("::ffff:10.20.0.1".parse().unwrap()), "no family mixing");
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one: IpRange = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains("192.0.2.7".parse().unwrap()) && !one.contains("192.0.2.8".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "example.com",
            "10.0.0.0/8/8",
            "",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validity_is_backdated_and_capped_by_the_ca() {
        let now = time::macros::datetime!(2026-06-01 00:00 UTC);
        let ca_end = now + Duration::days(30);
        let (not_before, not_after) = leaf_validity(now, Duration::days(90), Duration::days(397), ca_end).unwrap();
        assert_eq!(not_before, now - Duration::minutes(1));
        assert_eq!(not_after, ca_end);
        assert!(leaf_validity(now, Duration::days(400), Duration::days(397), ca_end).is_err());
        assert!(leaf_validity(now, Duration::hours(1), Duration::days(397), ca_end).is_err());
    }
}
