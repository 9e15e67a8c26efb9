//! Asking nameservers directly whether a TXT record is visible yet, and following the CNAMEs of a
//! delegated challenge name.
//!
//! Every query goes to an explicitly named server through a fresh, cacheless hickory resolver:
//! the machine's resolver configuration (`/etc/resolv.conf`, `/etc/hosts`) is never read, because
//! a recursive resolver's cache would answer from before the record existed.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::name::{parse_fqdn, with_trailing_dot};
use crate::rfc2136::rcode_mnemonic;
use crate::{DnsError, DnsProvider};

/// Longest CNAME chain followed before giving up (a loop, or a misconfiguration).
const MAX_CNAME_HOPS: usize = 8;

/// Longest wait for one answer from one server.
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls nameservers until a TXT value is visible on all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagationCheck {
    nameservers: Option<Vec<SocketAddr>>,
    timeout: Duration,
    interval: Duration,
}

impl Default for PropagationCheck {
    /// No nameservers yet (see [`PropagationCheck::defaulting_to`]), 2 minutes, every second.
    fn default() -> Self {
        Self {
            nameservers: None,
            timeout: Duration::from_secs(120),
            interval: Duration::from_secs(1),
        }
    }
}

/// What one server answered to the TXT query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerAnswer {
    Values(Vec<String>),
    NoRecord,
    Failed(String),
}

impl ServerAnswer {
    fn contains(&self, value: &str) -> bool {
        matches!(self, Self::Values(values) if values.iter().any(|v| v == value))
    }
}

impl fmt::Display for ServerAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Values(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                write!(f, "answered TXT {}", quoted.join(", "))
            }
            Self::NoRecord => f.write_str("answered no TXT record"),
            Self::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

impl PropagationCheck {
    /// A check against `nameservers` (`None`: the provider's authoritative servers, see
    /// [`PropagationCheck::defaulting_to`]) giving up after `timeout`, asking every `interval`.
    pub fn new(nameservers: Option<Vec<SocketAddr>>, timeout: Duration, interval: Duration) -> Self {
        Self {
            nameservers,
            timeout,
            interval,
        }
    }

    /// This check, asking `provider`'s authoritative server when no nameservers were configured.
    pub fn defaulting_to(&self, provider: &DnsProvider) -> Self {
        let mut check = self.clone();
        if check.nameservers.is_none() {
            check.nameservers = provider.authoritative_servers();
        }
        check
    }

    /// The servers asked, if known.
    pub fn nameservers(&self) -> Option<&[SocketAddr]> {
        self.nameservers.as_deref()
    }

    /// Waits until every queried server answers TXT at `fqdn` containing `value`.
    ///
    /// Pass the name the record was written at (the result of [`resolve_challenge_target`]): the
    /// servers are asked directly, and an authoritative server does not follow CNAMEs into zones
    /// it does not serve.
    pub async fn wait_for(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let servers = self.servers()?;
        let name = parse_fqdn(fqdn)?;
        let query_timeout = self.timeout.clamp(Duration::from_millis(100), MAX_QUERY_TIMEOUT);
        let deadline = Instant::now() + self.timeout;
        loop {
            let answers = query_all(servers, &name, query_timeout).await;
            if answers.iter().all(|(_, answer)| answer.contains(value)) {
                tracing::info!(%name, servers = servers.len(), "propagation: TXT value visible everywhere");
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DnsError::NotPropagated {
                    fqdn: with_trailing_dot(&name),
                    value: value.to_owned(),
                    timeout: self.timeout,
                    last_seen: answers
                        .iter()
                        .map(|(server, answer)| format!("{server} {answer}"))
                        .collect(),
                });
            }
            tracing::debug!(%name, ?answers, "propagation: not visible everywhere yet");
            tokio::time::sleep(self.interval.min(deadline - now)).await;
        }
    }

    fn servers(&self) -> Result<&[SocketAddr], DnsError> {
        match self.nameservers.as_deref() {
            Some(servers) if !servers.is_empty() => Ok(servers),
            _ => Err(DnsError::Config(
                "propagation check: no nameservers to ask; configure them (the system resolver is never used)"
                    .to_owned(),
            )),
        }
    }
}

/// Follows the CNAME chain (at most 8 links) starting at `fqdn`, e.g. `_acme-challenge.x`
/// delegated to another zone as RFC 8555 §8.4 users do, asking `nameservers` directly.
/// Returns the final name, with its trailing dot; `fqdn` itself when it is not a CNAME.
///
/// The servers must be recursive resolvers or authoritative for `fqdn`; when they refuse to
/// answer for a CNAME's target (a zone they do not serve), the chain ends at that target.
pub async fn resolve_challenge_target(fqdn: &str, nameservers: &[SocketAddr]) -> Result<String, DnsError> {
    if nameservers.is_empty() {
        return Err(DnsError::Config(
            "CNAME resolution: no nameservers to ask; configure them (the system resolver is never used)".to_owned(),
        ));
    }
    let mut current = parse_fqdn(fqdn)?;
    let mut chain = vec![with_trailing_dot(&current)];
    loop {
        let is_first_link = chain.len() == 1;
        let target = match cname_of(&current, nameservers).await {
            Ok(Some(target)) => target,
            Ok(None) => return Ok(with_trailing_dot(&current)),
            // The servers that serve the challenge name need not serve the zone it is delegated
            // to (that is the point of delegating): their refusal ends the chain there.
            Err(CnameFailure::AllRefused(_)) if !is_first_link => {
                tracing::debug!(name = %current, "CNAME target not served by these nameservers; chain ends");
                return Ok(with_trailing_dot(&current));
            }
            Err(CnameFailure::AllRefused(reason) | CnameFailure::Other(reason)) => {
                return Err(DnsError::CnameLookup {
                    name: with_trailing_dot(&current),
                    reason,
                });
            }
        };
        if chain.len() > MAX_CNAME_HOPS || chain.contains(&with_trailing_dot(&target)) {
            chain.push(with_trailing_dot(&target));
            return Err(DnsError::CnameChainTooLong {
                fqdn: with_trailing_dot(&parse_fqdn(fqdn)?),
                limit: MAX_CNAME_HOPS,
                chain,
            });
        }
        tracing::debug!(from = %current, to = %target, "following CNAME of challenge name");
        chain.push(with_trailing_dot(&target));
        current = target;
    }
}

/// Why no server said whether a name is a CNAME; the text lists every server's answer.
enum CnameFailure {
    AllRefused(String),
    Other(String),
}

/// The CNAME target of `name` from the first server that answers.
async fn cname_of(name: &Name, nameservers: &[SocketAddr]) -> Result<Option<Name>, CnameFailure> {
    let mut failures = Vec::new();
    let mut all_refused = true;
    for &server in nameservers {
        let lookup = match resolver_for(server, MAX_QUERY_TIMEOUT) {
            Ok(resolver) => resolver.lookup(name.clone(), RecordType::CNAME).await,
            Err(e) => Err(e),
        };
        match lookup {
            Ok(lookup) => {
                let target = lookup.answers().iter().find_map(|record| match &record.data {
                    RData::CNAME(cname) if record.name == *name => Some(cname.0.clone()),
                    _ => None,
                });
                return Ok(target);
            }
            Err(e) if e.is_no_records_found() => return Ok(None),
            Err(e) => {
                all_refused &= matches!(
                    e,
                    NetError::Dns(HickoryDnsError::ResponseCode(
                        ResponseCode::Refused | ResponseCode::NotAuth
                    ))
                );
                failures.push(format!("{server}: {}", describe(&e)));
            }
        }
    }
    let reason = failures.join("; ");
    Err(if all_refused {
        CnameFailure::AllRefused(reason)
    } else {
        CnameFailure::Other(reason)
    })
}

/// Asks every server at once; answers come back in the order of `servers`.
async fn query_all(servers: &[SocketAddr], name: &Name, query_timeout: Duration) -> Vec<(SocketAddr, ServerAnswer)> {
    let mut queries = JoinSet::new();
    for (index, &server) in servers.iter().enumerate() {
        let name = name.clone();
        queries.spawn(async move { (index, server, query_txt(server, name, query_timeout).await) });
    }
    let mut answers = Vec::with_capacity(servers.len());
    while let Some(joined) = queries.join_next().await {
        match joined {
            Ok(answer) => answers.push(answer),
            Err(e) => tracing::warn!("propagation query task failed: {e}"),
        }
    }
    answers.sort_by_key(|(index, _, _)| *index);
    let mut by_server: Vec<(SocketAddr, ServerAnswer)> = answers
        .into_iter()
        .map(|(_, server, answer)| (server, answer))
        .collect();
    // A panicked task must still count as a server that has not shown the value.
    for &server in servers {
        if !by_server.iter().any(|(s, _)| *s == server) {
            by_server.push((server, ServerAnswer::Failed("query task failed".to_owned())));
        }
    }
    by_server
}

async fn query_txt(server: SocketAddr, name: Name, query_timeout: Duration) -> ServerAnswer {
    let resolver = match resolver_for(server, query_timeout) {
        Ok(resolver) => resolver,
        Err(e) => return ServerAnswer::Failed(e.to_string()),
    };
    // The resolver's own timeout covers each try; this bounds the whole lookup.
    let lookup = tokio::time::timeout(query_timeout * 2, resolver.lookup(name, RecordType::TXT)).await;
    match lookup {
        Err(_) => ServerAnswer::Failed(format!("no answer within {:?}", query_timeout * 2)),
        Ok(Ok(lookup)) => ServerAnswer::Values(
            lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    // A TXT record's strings form one value when read back (RFC 7208 §3.3 style).
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|chunk| String::from_utf8_lossy(chunk))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect(),
        ),
        Ok(Err(e)) if e.is_no_records_found() => ServerAnswer::NoRecord,
        Ok(Err(e)) => ServerAnswer::Failed(describe(&e)),
    }
}

/// `SERVFAIL` rather than hickory's "error response: Server Failure".
fn describe(error: &NetError) -> String {
    match error {
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => rcode_mnemonic(*code),
        other => other.to_string(),
    }
}

/// A resolver that asks only `server` (UDP, then TCP for truncated answers), without cache,
/// hosts file or search domains.
fn resolver_for(server: SocketAddr, query_timeout: Duration) -> Result<TokioResolver, NetError> {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut connection| {
            connection.port = server.port();
            connection
        })
        .collect();
    let name_server = NameServerConfig::new(server.ip(), true, connections);
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = query_timeout;
    options.attempts = 1;
    options.ndots = 0;
    options.case_randomization = false;
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_clearly() {
        assert_eq!(
            ServerAnswer::Values(vec!["a".into(), "b".into()]).to_string(),
            "answered TXT \"a\", \"b\""
        );
        assert_eq!(ServerAnswer::NoRecord.to_string(), "answered no TXT record");
        assert_eq!(ServerAnswer::Failed("SERVFAIL".into()).to_string(), "failed: SERVFAIL");
        assert!(ServerAnswer::Values(vec!["a".into()]).contains("a"));
        assert!(!ServerAnswer::Failed("a".into()).contains("a"));
    }

    #[tokio::test]
    async fn no_nameservers_is_a_configuration_error() {
        let check = PropagationCheck::new(None, Duration::from_secs(1), Duration::from_millis(100));
        let error = check.wait_for("_acme-challenge.example.test", "v").await.unwrap_err();
        assert!(matches!(error, DnsError::Config(_)), "{error}");
        let error = resolve_challenge_target("_acme-challenge.example.test", &[])
            .await
            .unwrap_err();
        assert!(matches!(error, DnsError::Config(_)), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_with_what_was_seen() {
        // Nothing listens on the discard port of loopback, so UDP queries go unanswered.
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let check = PropagationCheck::new(
            Some(vec![server]),
            Duration::from_millis(300),
            Duration::from_millis(100),
        );
        let error = check.wait_for("_acme-challenge.example.test", "v").await.unwrap_err();
        let DnsError::NotPropagated { last_seen, .. } = &error else {
            panic!("unexpected error {error}");
        };
        assert_eq!(last_seen.len(), 1);
        assert!(last_seen[0].starts_with("127.0.0.1:9 failed"), "{error}");
    }
}
