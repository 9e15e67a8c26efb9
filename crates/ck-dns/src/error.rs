//! The one error type of the crate. Messages name the server, zone, key or command involved and
//! what to check, and never carry a secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while writing, removing or checking a dns-01 record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The provider configuration cannot be used.
    #[error("invalid DNS provider configuration: {0}")]
    Config(String),

    /// A file named by the configuration cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A domain name or TXT value is not usable.
    #[error("invalid DNS name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },

    /// The TXT value cannot be carried in one TXT string.
    #[error("invalid TXT value: {0}")]
    InvalidValue(String),

    /// The server answered BADSIG or BADKEY; hickory reports this as an unverifiable TSIG record.
    #[error(
        "the DNS server {server} rejected the TSIG signature (wrong key name, algorithm or secret for key `{key_name}`)"
    )]
    TsigRejected { server: SocketAddr, key_name: String },

    /// The server answered REFUSED to a signed update.
    #[error(
        "the server {server} refused the update for {zone}: check the update-policy allows TXT for key `{key_name}`"
    )]
    UpdateRefused {
        server: SocketAddr,
        zone: String,
        key_name: String,
    },

    /// The server answered an update with another error code.
    #[error("the server {server} answered {rcode} to the update of {name} in zone {zone}")]
    UpdateFailed {
        server: SocketAddr,
        zone: String,
        name: String,
        rcode: String,
    },

    /// No zone enclosing the name was found on the server.
    #[error("no zone for {fqdn} on {server}: the server is not authoritative for it or any parent (set `zone`)")]
    ZoneNotFound { fqdn: String, server: SocketAddr },

    /// The DNS exchange itself failed (timeout, unreachable, undecodable answer).
    #[error("DNS exchange with {server} failed: {reason}")]
    Exchange { server: SocketAddr, reason: String },

    /// The exec hook's file does not have the pinned checksum.
    #[error("refusing to run {}: its SHA-256 is {actual}, but the configuration pins {expected}", command.display())]
    ExecChecksumMismatch {
        command: PathBuf,
        expected: String,
        actual: String,
    },

    /// The exec hook could not be started.
    #[error("cannot run {}: {source}", command.display())]
    ExecSpawn {
        command: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The exec hook ran longer than its timeout and was killed.
    #[error("{} {action} did not finish within {timeout:?} and was killed", command.display())]
    ExecTimeout {
        command: PathBuf,
        action: &'static str,
        timeout: Duration,
    },

    /// The exec hook exited unsuccessfully.
    #[error("{} {action} failed ({status}); end of its stderr:\n{stderr_tail}", command.display())]
    ExecFailed {
        command: PathBuf,
        action: &'static str,
        status: String,
        stderr_tail: String,
    },

    /// An HTTP request to the Cloudflare API could not be made or its answer read.
    #[error("Cloudflare API request `{operation}` failed: {source}")]
    CloudflareHttp {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },

    /// The Cloudflare API answered with an error.
    #[error("Cloudflare API request `{operation}` failed with HTTP {status}: {message}")]
    CloudflareApi {
        operation: &'static str,
        status: u16,
        message: String,
    },

    /// No Cloudflare zone visible to the token encloses the name.
    #[error(
        "no Cloudflare zone visible to the API token encloses {fqdn} (set `zone_id`, or grant the token Zone:Read)"
    )]
    CloudflareZoneNotFound { fqdn: String },

    /// The TXT value was not seen on every nameserver before the timeout.
    #[error(
        "TXT `{value}` at {fqdn} was not visible on every nameserver after {timeout:?}; last answers: {}",
        last_seen.join("; ")
    )]
    NotPropagated {
        fqdn: String,
        value: String,
        timeout: Duration,
        /// One line per nameserver: what it answered the last time it was asked.
        last_seen: Vec<String>,
    },

    /// CNAME following went on for longer than allowed (or looped).
    #[error("{fqdn}: more than {limit} CNAMEs to follow (a loop?); chain so far: {}", chain.join(" -> "))]
    CnameChainTooLong {
        fqdn: String,
        limit: usize,
        chain: Vec<String>,
    },

    /// A lookup needed to follow a CNAME failed on every nameserver.
    #[error("cannot look up CNAME of {name}: {reason}")]
    CnameLookup { name: String, reason: String },
}
