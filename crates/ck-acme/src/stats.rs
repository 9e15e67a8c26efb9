//! Process-wide counts of ACME requests (by endpoint and outcome) and the DNS propagation
//! waits of dns-01, for the control plane's `/metrics`: ck-acme keeps no metrics registry of
//! its own, so it counts here and the server reads the counts at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::AcmeFailure;

static REQUESTS: Mutex<BTreeMap<(&'static str, String), u64>> = Mutex::new(BTreeMap::new());
static DNS_WAITS: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// DNS waits kept until the next scrape at most; older ones are dropped first.
const MAX_PENDING_WAITS: usize = 10_000;

/// The ACME resource an operation (as named in `with_nonce_retry!`) talks to (RFC 8555 §7.1).
fn endpoint_of(operation: &str) -> &'static str {
    match operation {
        "creating the order" => "newOrder",
        "reading the order" | "waiting for validation" => "order",
        "reading the authorization" => "authz",
        "telling the CA the challenge is ready" => "challenge",
        "finalizing the order" => "finalize",
        "downloading the certificate" => "certificate",
        "registering the ACME account" => "newAccount",
        "looking up the account" | "deactivating the account" => "account",
        "rolling over the account key" => "keyChange",
        "revoking the certificate" => "revokeCert",
        _ => "other",
    }
}

/// A bounded outcome label: `ok`, an RFC 8555 error type (`badNonce`, `rateLimited`…), `problem`
/// for a CA's own type, `error` for a failure without a problem document (network, timeout).
pub(crate) fn outcome_of(failure: &AcmeFailure) -> String {
    match &failure.problem {
        Some(problem) => match problem.problem_type.as_deref() {
            Some(t) if t.starts_with("urn:ietf:params:acme:error:") => problem.short_type().to_owned(),
            _ => "problem".to_owned(),
        },
        None => "error".to_owned(),
    }
}

pub(crate) fn record_request(operation: &str, outcome: &str) {
    if let Ok(mut counts) = REQUESTS.lock() {
        *counts.entry((endpoint_of(operation), outcome.to_owned())).or_insert(0) += 1;
    }
}

pub(crate) fn record_dns_wait(seconds: f64) {
    if let Ok(mut waits) = DNS_WAITS.lock() {
        if waits.len() >= MAX_PENDING_WAITS {
            waits.remove(0);
        }
        waits.push(seconds);
    }
}

/// ACME requests of this process so far: `(endpoint, outcome, count)`.
pub fn request_counts() -> Vec<(&'static str, String, u64)> {
    REQUESTS
        .lock()
        .map(|counts| counts.iter().map(|((e, o), n)| (*e, o.clone(), *n)).collect())
        .unwrap_or_default()
}

/// The dns-01 propagation waits (seconds) since the last call.
pub fn take_dns_waits() -> Vec<f64> {
    DNS_WAITS
        .lock()
        .map(|mut waits| std::mem::take(&mut *waits))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn operations_map_to_endpoints() {
        assert_eq!(super::endpoint_of("creating the order"), "newOrder");
        assert_eq!(super::endpoint_of("waiting for validation"), "order");
        assert_eq!(super::endpoint_of("something new"), "other");
    }
}
