//! The `cloudflare` provider, on the Cloudflare v4 REST API with a scoped API token.
//!
//! Hand-written on reqwest rather than the `cloudflare` crate: that crate pulls in reqwest 0.12
//! next to our 0.13 and a large API surface, while dns-01 needs only three endpoints (find the
//! zone, create a TXT record, find and delete a TXT record).

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::name::{check_txt_value, parse_fqdn, without_trailing_dot};
use crate::{DnsError, Secret};

const DEFAULT_API_BASE: &str = "https://api.cloudflare.com/client/v4";

/// lego's default TTL for Cloudflare: the lowest every plan accepts.
const RECORD_TTL: u32 = 120;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Cloudflare's error code for "an identical record already exists": a repeated present is fine.
const IDENTICAL_RECORD_EXISTS: i64 = 81058;

/// Configuration of the `cloudflare` provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudflareConfig {
    /// An API token with Zone:DNS:Edit (and Zone:Read unless `zone_id` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    /// A file holding the API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
    /// The zone's id; found by name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
    /// The API root, overridable for tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
}

/// A ready-to-use Cloudflare API client.
#[derive(Debug, Clone)]
pub(crate) struct CloudflareProvider {
    http: reqwest::Client,
    api_base: String,
    token: Secret,
    zone_id: Option<String>,
}

impl CloudflareConfig {
    pub(crate) fn build(&self) -> Result<CloudflareProvider, DnsError> {
        let token = match (&self.api_token, &self.api_token_file) {
            (Some(token), None) => token.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| DnsError::ReadFile {
                    path: path.clone(),
                    source,
                })?;
                Secret::new(text.trim())
            }
            (Some(_), Some(_)) => {
                return Err(DnsError::Config(
                    "cloudflare: set only one of `api_token` and `api_token_file`".to_owned(),
                ));
            }
            (None, None) => {
                return Err(DnsError::Config(
                    "cloudflare: set `api_token` or `api_token_file`".to_owned(),
                ));
            }
        };
        if token.expose().is_empty() {
            return Err(DnsError::Config("cloudflare: the API token is empty".to_owned()));
        }
        if let Some(zone_id) = &self.zone_id {
            check_id("zone_id", zone_id)?;
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| DnsError::Config(format!("cloudflare: cannot build the HTTP client: {e}")))?;
        Ok(CloudflareProvider {
            http,
            api_base: self
                .api_base
                .as_deref()
                .unwrap_or(DEFAULT_API_BASE)
                .trim_end_matches('/')
                .to_owned(),
            token,
            zone_id: self.zone_id.clone(),
        })
    }
}

/// Ids go into URL paths, so only the characters Cloudflare ids use are let through.
fn check_id(what: &str, id: &str) -> Result<(), DnsError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(DnsError::Config(format!(
            "cloudflare: {what} {id:?} is not a Cloudflare id"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<T>,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct TxtRecord {
    id: String,
    #[serde(default)]
    content: String,
}

/// Why a request failed: kept apart from `DnsError` so that present can accept "already exists".
enum Failure {
    Http(reqwest::Error),
    Api { status: u16, errors: Vec<ApiMessage> },
}

impl Failure {
    fn into_error(self, operation: &'static str) -> DnsError {
        match self {
            Self::Http(source) => DnsError::CloudflareHttp {
                operation,
                source: source.without_url(),
            },
            Self::Api { status, errors } => {
                let message = if errors.is_empty() {
                    "no error details in the answer".to_owned()
                } else {
                    errors
                        .iter()
                        .map(|e| format!("{} (code {})", e.message, e.code))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                DnsError::CloudflareApi {
                    operation,
                    status,
                    message,
                }
            }
        }
    }
}

impl CloudflareProvider {
    pub(crate) async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        check_txt_value(value)?;
        let name = without_trailing_dot(&parse_fqdn(fqdn)?);
        let zone_id = self.zone_id_for(&name).await?;
        let body = serde_json::json!({
            "type": "TXT",
            "name": name,
            "content": value,
            "ttl": RECORD_TTL,
        });
        let request = self
            .http
            .post(format!("{}/zones/{zone_id}/dns_records", self.api_base))
            .json(&body);
        match self.send::<serde_json::Value>(request).await {
            Ok(_) => {
                tracing::info!(%name, zone_id, "cloudflare: TXT record created");
                Ok(())
            }
            Err(Failure::Api { errors, .. }) if errors.iter().any(|e| e.code == IDENTICAL_RECORD_EXISTS) => {
                tracing::info!(%name, zone_id, "cloudflare: TXT record already present");
                Ok(())
            }
            Err(failure) => Err(failure.into_error("create TXT record")),
        }
    }

    pub(crate) async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        check_txt_value(value)?;
        let name = without_trailing_dot(&parse_fqdn(fqdn)?);
        let zone_id = self.zone_id_for(&name).await?;
        let request = self
            .http
            .get(format!("{}/zones/{zone_id}/dns_records", self.api_base))
            .query(&[("type", "TXT"), ("name", name.as_str()), ("content", value)]);
        let records: Vec<TxtRecord> = self.send(request).await.map_err(|f| f.into_error("list TXT records"))?;
        // Cloudflare may show TXT content quoted; compare unquoted so only this value goes.
        let matching = records
            .into_iter()
            .filter(|record| record.content.trim_matches('"') == value);
        let mut deleted = 0_usize;
        for record in matching {
            check_id("record id", &record.id)?;
            let request = self
                .http
                .delete(format!("{}/zones/{zone_id}/dns_records/{}", self.api_base, record.id));
            self.send::<serde_json::Value>(request)
                .await
                .map_err(|f| f.into_error("delete TXT record"))?;
            deleted += 1;
        }
        tracing::info!(%name, zone_id, deleted, "cloudflare: TXT record cleanup done");
        Ok(())
    }

    /// The configured zone id, or the id of the longest zone name enclosing `name`.
    async fn zone_id_for(&self, name: &str) -> Result<String, DnsError> {
        if let Some(zone_id) = &self.zone_id {
            return Ok(zone_id.clone());
        }
        let labels: Vec<&str> = name.split('.').collect();
        // Cloudflare zones have at least two labels, so the bare TLD is never asked for.
        for start in 0..labels.len().saturating_sub(1) {
            let candidate = labels[start..].join(".");
            let request = self
                .http
                .get(format!("{}/zones", self.api_base))
                .query(&[("name", candidate.as_str())]);
            let zones: Vec<Zone> = self.send(request).await.map_err(|f| f.into_error("list zones"))?;
            if let Some(zone) = zones.into_iter().find(|z| z.name.eq_ignore_ascii_case(&candidate)) {
                check_id("zone id", &zone.id)?;
                tracing::debug!(%name, zone = %zone.name, "cloudflare: zone found");
                return Ok(zone.id);
            }
        }
        Err(DnsError::CloudflareZoneNotFound { fqdn: name.to_owned() })
    }

    async fn send<T: DeserializeOwned + Default>(&self, request: reqwest::RequestBuilder) -> Result<T, Failure> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(Failure::Http)?;
        let status = response.status();
        let body = response.bytes().await.map_err(Failure::Http)?;
        let envelope: Option<Envelope<T>> = serde_json::from_slice(&body).ok();
        match envelope {
            // DELETE answers carry little, so a missing result is an empty one.
            Some(Envelope {
                success: true, result, ..
            }) if status.is_success() => Ok(result.unwrap_or_default()),
            Some(envelope) => Err(Failure::Api {
                status: status.as_u16(),
                errors: envelope.errors,
            }),
            None => Err(Failure::Api {
                status: status.as_u16(),
                errors: vec![ApiMessage {
                    code: 0,
                    message: format!(
                        "unreadable answer: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ),
                }],
            }),
        }
    }
}
