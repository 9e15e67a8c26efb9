//! ACME failures: a message, the CA's problem document when there is one, and whether a retry
//! can help (and when).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// RFC 7807 / RFC 8555 §6.7 problem document, as kept on a failed job and shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDocument {
    /// For example `urn:ietf:params:acme:error:rateLimited`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// The CA's human-readable explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// HTTP status of the response that carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Per-identifier problems (RFC 8555 §6.7.1), also used for failed challenges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<SubproblemDocument>,
}

/// One identifier's part of a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubproblemDocument {
    /// The name (or IP) the problem is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Problem type URN.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ProblemDocument {
    pub(crate) fn from_acme(problem: &instant_acme::Problem) -> Self {
        Self {
            problem_type: problem.r#type.clone(),
            detail: problem.detail.clone(),
            status: problem.status,
            subproblems: problem
                .subproblems
                .iter()
                .map(|sub| SubproblemDocument {
                    identifier: sub.identifier.as_ref().map(|id| id.authorized(false).to_string()),
                    problem_type: sub.r#type.clone(),
                    detail: sub.detail.clone(),
                })
                .collect(),
        }
    }

    /// The last segment of the type URN (`rateLimited`), for short messages.
    pub fn short_type(&self) -> &str {
        self.problem_type
            .as_deref()
            .map_or("problem", |t| t.rsplit(':').next().unwrap_or(t))
    }

    fn summary(&self) -> String {
        let mut out = format!(
            "{}: {}",
            self.short_type(),
            self.detail.as_deref().unwrap_or("no detail")
        );
        for sub in &self.subproblems {
            out.push_str(&format!(
                "; {}: {} ({})",
                sub.identifier.as_deref().unwrap_or("?"),
                sub.detail.as_deref().unwrap_or("no detail"),
                sub.problem_type
                    .as_deref()
                    .map_or("problem", |t| t.rsplit(':').next().unwrap_or(t)),
            ));
        }
        out
    }
}

/// Why an ACME operation failed.
#[derive(Debug, Clone)]
pub struct AcmeFailure {
    /// One line for logs, job records and CLI output. Never holds a secret.
    pub message: String,
    /// The CA's problem document, when the CA sent one (boxed: failures travel in `Result`s).
    pub problem: Option<Box<ProblemDocument>>,
    /// Whether trying again later can succeed (network trouble, rate limits, DNS not ready).
    pub transient: bool,
    /// The earliest retry the CA asked for (`Retry-After`).
    pub retry_after: Option<SystemTime>,
}

impl std::fmt::Display for AcmeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AcmeFailure {}

/// Problem types after which the same request cannot succeed without a change by the user.
const PERMANENT_PROBLEMS: &[&str] = &[
    "accountDoesNotExist",
    "alreadyRevoked",
    "badCSR",
    "badPublicKey",
    "badRevocationReason",
    "badSignatureAlgorithm",
    "caa",
    "externalAccountRequired",
    "invalidContact",
    "rejectedIdentifier",
    "unsupportedContact",
    "unsupportedIdentifier",
    "userActionRequired",
];

impl AcmeFailure {
    /// A failure of ours, before or around the CA conversation.
    pub fn local(message: impl Into<String>, transient: bool) -> Self {
        Self {
            message: message.into(),
            problem: None,
            transient,
            retry_after: None,
        }
    }

    /// A failed step `what` (e.g. "creating the order"), classified from instant-acme's error.
    pub(crate) fn from_acme(what: &str, error: instant_acme::Error, retry_after: Option<SystemTime>) -> Self {
        match error {
            instant_acme::Error::Api(problem) => {
                let document = ProblemDocument::from_acme(&problem);
                let transient = !PERMANENT_PROBLEMS.contains(&document.short_type());
                Self {
                    message: format!("{what}: the CA answered {}", document.summary()),
                    problem: Some(Box::new(document)),
                    transient,
                    retry_after: if matches!(problem.status, Some(429 | 503)) {
                        retry_after
                    } else {
                        None
                    },
                }
            }
            instant_acme::Error::Timeout(_) => Self::local(format!("{what}: the CA did not finish in time"), true),
            instant_acme::Error::Unsupported(feature) => {
                Self::local(format!("{what}: the CA does not support {feature}"), false)
            }
            other => Self::local(format!("{what}: {other}"), true),
        }
    }

    /// A challenge that the CA found invalid: the subproblems name the identifiers.
    pub(crate) fn challenge_invalid(subproblems: Vec<SubproblemDocument>) -> Self {
        let document = ProblemDocument {
            // The order has no problem of its own: the first challenge's type says the most.
            problem_type: subproblems.first().and_then(|s| s.problem_type.clone()),
            detail: Some("the CA could not validate the challenges".to_owned()),
            status: None,
            subproblems,
        };
        Self {
            message: format!("validation failed: {}", document.summary()),
            problem: Some(Box::new(document)),
            transient: true,
            retry_after: None,
        }
    }

    /// Whether the CA rejected a nonce (retry at once with the fresh one).
    pub(crate) fn is_bad_nonce(error: &instant_acme::Error) -> bool {
        matches!(error, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
    }
}

/// Extra tries after the CA rejects a nonce. instant-acme already retries each request three
/// times; a CA that rejects half its nonces (Pebble's fault mode) then still gets through.
pub(crate) const BAD_NONCE_RETRIES: u32 = 10;

/// Evaluates and awaits `$call` again while the CA answers `badNonce`, then maps the final
/// error with the `Retry-After` recorded in `$slot`. A macro, not a function: the calls borrow
/// an order mutably, which a retried closure could not return.
macro_rules! with_nonce_retry {
    ($slot:expr, $what:expr, $call:expr) => {{
        let mut retries = 0;
        loop {
            match $call.await {
                Ok(value) => {
                    $crate::stats::record_request($what, "ok");
                    break Ok(value);
                }
                Err(error)
                    if $crate::AcmeFailure::is_bad_nonce(&error) && retries < $crate::error::BAD_NONCE_RETRIES =>
                {
                    $crate::stats::record_request($what, "badNonce");
                    retries += 1
                }
                Err(error) => {
                    let failure = $crate::AcmeFailure::from_acme($what, error, $slot.get());
                    $crate::stats::record_request($what, &$crate::stats::outcome_of(&failure));
                    break Err(failure);
                }
            }
        }
    }};
}
pub(crate) use with_nonce_retry;
