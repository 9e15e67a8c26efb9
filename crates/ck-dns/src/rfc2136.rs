//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), as BIND, Knot and PowerDNS accept them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hickory_net::NetError;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use serde::{Deserialize, Serialize};

use crate::name::{check_txt_value, parse_fqdn};
use crate::{DnsError, Secret};

/// How long one DNS exchange (with hickory's own retries) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Allowed clock difference between us and the server, BIND's and RFC 8945's usual 300 s.
const TSIG_FUDGE_SECONDS: u16 = 300;

fn default_ttl() -> u32 {
    60
}

/// Configuration of the `rfc2136` provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// The primary server that accepts updates, e.g. `127.0.0.1:53`.
    pub server: SocketAddr,
    /// The zone to update; found by asking `server` for the SOA when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The TSIG key's name, as in `key "acme-key" { ... }`.
    pub tsig_key_name: String,
    /// `hmac-sha256` or `hmac-sha512` (a trailing dot is accepted).
    pub tsig_algorithm: String,
    /// The base64 secret, as printed by `tsig-keygen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret: Option<Secret>,
    /// A file holding the base64 secret, or a BIND key file (`key "x" { ...; secret "..."; };`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret_file: Option<PathBuf>,
    /// TTL of the TXT records written, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
}

/// A ready-to-use RFC 2136 updater.
#[derive(Clone)]
pub(crate) struct Rfc2136Provider {
    server: SocketAddr,
    zone: Option<Name>,
    key_name: String,
    signer: TSigner,
    ttl: u32,
}

impl std::fmt::Debug for Rfc2136Provider {
    // TSigner's own Debug would not redact the key, so it is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Provider")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Config {
    pub(crate) fn build(&self) -> Result<Rfc2136Provider, DnsError> {
        let secret = match (&self.tsig_secret, &self.tsig_secret_file) {
            (Some(secret), None) => secret.clone(),
            (None, Some(path)) => read_secret_file(path)?,
            (Some(_), Some(_)) => {
                return Err(DnsError::Config(
                    "rfc2136: set only one of `tsig_secret` and `tsig_secret_file`".to_owned(),
                ));
            }
            (None, None) => {
                return Err(DnsError::Config(
                    "rfc2136: set `tsig_secret` or `tsig_secret_file`".to_owned(),
                ));
            }
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| {
                DnsError::Config(format!(
                    "rfc2136: the TSIG secret of key `{}` is not valid base64",
                    self.tsig_key_name
                ))
            })?;
        let algorithm = parse_algorithm(&self.tsig_algorithm)?;
        let key_name = Name::from_ascii(self.tsig_key_name.trim()).map_err(|e| {
            DnsError::Config(format!(
                "rfc2136: `tsig_key_name` {:?} is not a DNS name: {e}",
                self.tsig_key_name
            ))
        })?;
        let signer = TSigner::new(key, algorithm, key_name, TSIG_FUDGE_SECONDS)
            .map_err(|e| DnsError::Config(format!("rfc2136: cannot use the TSIG key: {e}")))?;
        let zone = self.zone.as_deref().map(parse_fqdn).transpose()?;
        Ok(Rfc2136Provider {
            server: self.server,
            zone,
            key_name: self.tsig_key_name.trim().trim_end_matches('.').to_owned(),
            signer,
            ttl: self.ttl,
        })
    }
}

fn parse_algorithm(text: &str) -> Result<TsigAlgorithm, DnsError> {
    match text.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        _ => Err(DnsError::Config(format!(
            "rfc2136: unsupported `tsig_algorithm` {text:?}: use hmac-sha256 or hmac-sha512"
        ))),
    }
}

/// Reads a bare base64 secret, or the `secret "...";` statement of a BIND key file.
fn read_secret_file(path: &Path) -> Result<Secret, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    if !text.contains("secret") {
        let bare = text.trim();
        if bare.is_empty() {
            return Err(DnsError::Config(format!("rfc2136: {} is empty", path.display())));
        }
        return Ok(Secret::new(bare));
    }
    secret_from_bind_key_file(&text).ok_or_else(|| {
        DnsError::Config(format!(
            "rfc2136: {} looks like a BIND key file but has no `secret \"...\";` statement",
            path.display()
        ))
    })
}

fn secret_from_bind_key_file(text: &str) -> Option<Secret> {
    let after_keyword = &text[text.find("secret")? + "secret".len()..];
    let opening = after_keyword.find('"')?;
    // Only blanks may stand between the keyword and its quoted value.
    if !after_keyword[..opening].trim().is_empty() {
        return None;
    }
    let quoted = &after_keyword[opening + 1..];
    let value = &quoted[..quoted.find('"')?];
    (!value.trim().is_empty()).then(|| Secret::new(value.trim()))
}

impl Rfc2136Provider {
    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    pub(crate) async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        check_txt_value(value)?;
        let name = parse_fqdn(fqdn)?;
        let zone = self.zone_for(&name).await?;
        let record = self.txt_record(&name, value);
        let mut client = self.client(Some(self.signer.clone()));
        // append (not create) so that the apex and wildcard values of one order can coexist.
        let answer = client.append(record, zone.clone(), false).await;
        self.check_update_answer(answer, &zone, &name)?;
        tracing::info!(server = %self.server, %zone, %name, "rfc2136: TXT record added");
        Ok(())
    }

    pub(crate) async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        check_txt_value(value)?;
        let name = parse_fqdn(fqdn)?;
        let zone = self.zone_for(&name).await?;
        let record = self.txt_record(&name, value);
        let mut client = self.client(Some(self.signer.clone()));
        let answer = client.delete_by_rdata(record, zone.clone()).await;
        self.check_update_answer(answer, &zone, &name)?;
        tracing::info!(server = %self.server, %zone, %name, "rfc2136: TXT record removed");
        Ok(())
    }

    fn txt_record(&self, name: &Name, value: &str) -> Record {
        let mut record = Record::from_rdata(name.clone(), self.ttl, RData::TXT(TXT::new(vec![value.to_owned()])));
        record.dns_class = DNSClass::IN;
        record
    }

    fn client(&self, signer: Option<TSigner>) -> Client<TokioRuntimeProvider> {
        let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(EXCHANGE_TIMEOUT))
            .with_signer(signer)
            .build();
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(background);
        client
    }

    /// The configured zone, or the one the server says encloses `name`.
    async fn zone_for(&self, name: &Name) -> Result<Name, DnsError> {
        if let Some(zone) = &self.zone {
            // hickory asserts this, so a misconfiguration would otherwise be a panic.
            if !zone.zone_of(name) {
                return Err(DnsError::Config(format!(
                    "rfc2136: {name} is not inside the configured zone {zone}"
                )));
            }
            return Ok(zone.clone());
        }
        self.discover_zone(name).await
    }

    /// Walks up from `name` asking the server for the SOA; the first owner it reports is the zone.
    async fn discover_zone(&self, name: &Name) -> Result<Name, DnsError> {
        let mut client = self.client(None);
        let mut candidate = name.clone();
        loop {
            let answer = client
                .query(candidate.clone(), DNSClass::IN, RecordType::SOA)
                .await
                .map_err(|e| self.exchange_error(&e))?;
            if let Some(zone) = soa_owner(&answer)
                && zone.zone_of(name)
            {
                tracing::debug!(%name, %zone, "rfc2136: zone found by SOA query");
                return Ok(zone);
            }
            if candidate.num_labels() == 0 {
                break;
            }
            candidate = candidate.base_name();
        }
        Err(DnsError::ZoneNotFound {
            fqdn: name.to_string(),
            server: self.server,
        })
    }

    fn check_update_answer(
        &self,
        answer: Result<DnsResponse, NetError>,
        zone: &Name,
        name: &Name,
    ) -> Result<(), DnsError> {
        let answer = answer.map_err(|e| {
            if is_tsig_verification_failure(&e) {
                self.tsig_rejected()
            } else {
                self.exchange_error(&e)
            }
        })?;
        match answer.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            ResponseCode::Refused => Err(DnsError::UpdateRefused {
                server: self.server,
                zone: zone.to_string(),
                key_name: self.key_name.clone(),
            }),
            ResponseCode::NotAuth if answer.signature.is_none() => Err(self.tsig_rejected()),
            ResponseCode::NotAuth => Err(DnsError::UpdateFailed {
                server: self.server,
                zone: zone.to_string(),
                name: name.to_string(),
                rcode: format!("NOTAUTH (the server is not the primary of zone {zone})"),
            }),
            rcode => Err(DnsError::UpdateFailed {
                server: self.server,
                zone: zone.to_string(),
                name: name.to_string(),
                rcode: rcode_mnemonic(rcode),
            }),
        }
    }

    fn tsig_rejected(&self) -> DnsError {
        DnsError::TsigRejected {
            server: self.server,
            key_name: self.key_name.clone(),
        }
    }

    fn exchange_error(&self, error: &NetError) -> DnsError {
        DnsError::Exchange {
            server: self.server,
            reason: error.to_string(),
        }
    }
}

/// The owner of the SOA in the answer, or in the authority section of a negative answer.
fn soa_owner(answer: &DnsResponse) -> Option<Name> {
    if !matches!(
        answer.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) {
        return None;
    }
    answer
        .answers
        .iter()
        .chain(answer.authorities.iter())
        .find(|record| record.record_type() == RecordType::SOA)
        .map(|record| record.name.clone())
}

/// BIND answers a bad key or signature with an unsigned (empty-MAC) TSIG record, which hickory
/// reports only as a protocol error about truncated HMACs or a wrong key: recognise those.
fn is_tsig_verification_failure(error: &NetError) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    text.contains("truncated hmac") || text.contains("wrong key")
}

/// `ServFail` → `SERVFAIL`, the spelling of dig and of server logs.
pub(crate) fn rcode_mnemonic(rcode: ResponseCode) -> String {
    format!("{rcode:?}").to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_parsed_out_of_a_bind_key_file() {
        let key_file = "key \"acme-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LWJ5dGVz\";\n};\n";
        let secret = secret_from_bind_key_file(key_file).unwrap();
        assert_eq!(secret.expose(), "c2VjcmV0LWJ5dGVz");
        assert!(secret_from_bind_key_file("key \"x\" { algorithm hmac-sha256; };").is_none());
    }

    #[test]
    fn algorithms_accept_a_trailing_dot_and_refuse_weak_ones() {
        assert_eq!(parse_algorithm("hmac-sha256.").unwrap(), TsigAlgorithm::HmacSha256);
        assert_eq!(parse_algorithm("HMAC-SHA512").unwrap(), TsigAlgorithm::HmacSha512);
        assert!(parse_algorithm("hmac-md5").is_err());
    }

    #[test]
    fn a_bad_base64_secret_is_refused_without_echoing_it() {
        let config = Rfc2136Config {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: None,
            tsig_key_name: "acme-key".to_owned(),
            tsig_algorithm: "hmac-sha256".to_owned(),
            tsig_secret: Some(Secret::new("not*base64*TOPSECRET")),
            tsig_secret_file: None,
            ttl: 60,
        };
        let error = config.build().unwrap_err().to_string();
        assert!(error.contains("not valid base64"), "{error}");
        assert!(!error.contains("TOPSECRET"), "{error}");
    }

    #[test]
    fn rcodes_are_spelled_like_dig() {
        assert_eq!(rcode_mnemonic(ResponseCode::ServFail), "SERVFAIL");
        assert_eq!(rcode_mnemonic(ResponseCode::NXDomain), "NXDOMAIN");
    }
}
