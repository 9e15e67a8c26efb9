//! The gate of every `/api/v1` call: request id, bearer authentication, the scope check from
//! the access table, rate limits, and the audit record of every state-changing call.
//!
//! Limits: failed authentications are throttled per client address (so tokens cannot be
//! guessed at network speed, and valid tokens from that address wait too); authenticated calls
//! are limited per token. A per-address limit on valid calls is deliberately absent: a fleet of
//! agents behind one NAT address would share it.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, MatchedPath, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ck_domain::TokenBuckets;
use ck_server::{Access, AuditEvent, ClientCertificateRejection, Cluster, Principal, ServiceError, TokenRejection};

use crate::openapi::{API_PREFIX, AccessTable};
use crate::{ApiError, ClientCertificate};

/// Addresses or tokens tracked at most (full buckets are dropped first).
const BUCKET_KEYS: usize = 100_000;

/// The response header (and accepted request header) carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// What a handler adds to its response for the audit record.
#[derive(Debug, Clone)]
pub(crate) struct AuditNote {
    /// `success` or `failure`, when the status alone does not tell (a deployment report).
    pub(crate) outcome: &'static str,
    /// A short, secret-free note.
    pub(crate) detail: Option<String>,
}

/// The gate's state.
#[derive(Clone)]
pub(crate) struct Gate {
    access: Access,
    cluster: Cluster,
    table: Arc<AccessTable>,
    per_token: Option<Arc<Mutex<TokenBuckets<String>>>>,
    origin: Instant,
}

impl Gate {
    pub(crate) fn new(access: Access, cluster: Cluster, table: AccessTable) -> Self {
        let per_token = access
            .token_rate_limit()
            .map(|(per_second, burst)| Arc::new(Mutex::new(TokenBuckets::new(burst, per_second, BUCKET_KEYS))));
        Self {
            access,
            cluster,
            table: Arc::new(table),
            per_token,
            origin: Instant::now(),
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Spends one request of the principal's allowance, or says how long to wait.
    fn check_rate(&self, principal: &Principal) -> Result<(), ApiError> {
        let Some(per_token) = &self.per_token else {
            return Ok(());
        };
        let Ok(mut buckets) = per_token.lock() else {
            return Ok(());
        };
        let key = principal.actor();
        let now = self.now();
        if let Some(wait) = buckets.retry_after(&key, now) {
            return Err(ApiError::too_many_requests(
                format!("this token sends too many requests ({key}); slow down or use several tokens"),
                wait,
            ));
        }
        buckets.spend(&key, now);
        Ok(())
    }
}

/// The request id: the caller's `x-request-id` when it is short and plain, else a new UUIDv7.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// What the audit record says a call touched: `certificates/<id>`, `tokens/<id>`… read from
/// the created resource's `Location`, else from the request path.
fn resource_of(path: &str) -> Option<String> {
    const RESOURCES: [&str; 5] = ["certificates", "issuers", "agents", "tokens", "jobs"];
    let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments
        .windows(2)
        .find(|pair| RESOURCES.contains(&pair[0]))
        .map(|pair| format!("{}/{}", pair[0], pair[1]))
}

/// 429 when `peer` has used up its failed authentications: one limit for the API, `/metrics`
/// and the web UI's sign-in.
pub(crate) fn refuse_if_throttled(access: &Access, peer: Option<IpAddr>) -> Result<(), ApiError> {
    let Some(peer) = peer else {
        return Ok(());
    };
    access.auth_failure_wait(peer).map_err(|wait| {
        ApiError::too_many_requests(
            format!("too many failed authentications from {peer}; wait before trying again"),
            wait,
        )
    })
}

/// Counts and records a failed authentication; a record that cannot be written is logged.
pub(crate) async fn record_auth_failure(access: &Access, peer: Option<IpAddr>, event: AuditEvent) {
    if let Err(error) = access.auth_failed(peer, event).await {
        tracing::error!(%error, "could not write an audit record of a failed authentication");
    }
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

pub(crate) async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    use tracing::Instrument;
    let request_id = request_id(&request);
    // Every line logged while the request is handled carries its id, method and path, so a
    // client's X-Request-Id finds them in any log format.
    let span = tracing::info_span!("request", request_id = %request_id, method = %request.method(),
        path = %request.uri().path());
    let started = std::time::Instant::now();
    let mut response = match pass(&gate, request, &request_id, next).instrument(span.clone()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request done"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Refuses a state-changing call that a page on another site could have made a browser send
/// (with the browser's TLS client certificate, or a token a proxy adds): a cross-site
/// `Sec-Fetch-Site` or `Origin`, or a POST that is not JSON. A cross-site page can send a form or
/// `text/plain` without asking; `application/json` needs a CORS preflight, which this API never
/// grants. Tools (curl, the CLI, agents) send no `Origin` and pass.
fn refuse_cross_site(request: &Request) -> Result<(), ApiError> {
    let method = request.method();
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return Ok(());
    }
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if site != "same-origin" && site != "none" {
            return Err(ApiError::forbidden(format!(
                "a {site} request cannot change state here (Sec-Fetch-Site: {site})"
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if origin_host.is_none() || origin_host != host {
            return Err(ApiError::forbidden(format!(
                "a request from the origin '{origin}' cannot change state here: only this server's own pages may"
            )));
        }
    }
    if method == Method::POST || method == Method::PUT || method == Method::PATCH {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::unsupported_media_type(format!(
                "{method} needs 'Content-Type: application/json' (an empty body, or {{}}, is fine when there is nothing to send)"
            )));
        }
    }
    Ok(())
}

async fn pass(gate: &Gate, request: Request, request_id: &str, next: Next) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let Some(route) = matched.as_deref().and_then(|m| gate.table.get(&method, m)) else {
        // A method the path does not have: 405 with the ones it has, before anything else.
        let allowed = matched.as_deref().map(|m| gate.table.methods(m)).unwrap_or_default();
        if !allowed.is_empty() {
            let list = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let mut response =
                ApiError::method_not_allowed(format!("{method} is not a method of this path: {list}")).into_response();
            if let Ok(value) = HeaderValue::from_str(&list) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return Ok(response);
        }
        tracing::error!(%method, path = %request.uri().path(), "a route has no access rule in the OpenAPI document; refused");
        return Err(ApiError::forbidden(
            "this endpoint has no access rule, so no token may call it",
        ));
    };
    refuse_cross_site(&request)?;
    refuse_if_throttled(&gate.access, peer)?;
    // Inside the `/api/v1` nest the URI lost its prefix; messages and records use the real one.
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |uri| uri.path().to_owned());
    let audit = |action: &str, actor: String, outcome: &str| {
        let mut event = AuditEvent::new(action, actor, outcome);
        event.request_id = Some(request_id.to_owned());
        event.client = peer.map(|p| p.to_string());
        event
    };

    // A bearer token, else a verified TLS client certificate bound to a token.
    let client_certificate = request.extensions().get::<ClientCertificate>().cloned();
    let mut certificate_refused = None;
    let presented = match (bearer_token(request.headers()), client_certificate) {
        (Some(token), _) => Some(gate.access.verify_token(token)),
        (None, Some(ClientCertificate(der))) => {
            Some(gate.access.verify_client_certificate(&der).await.map_err(|refusal| {
                let rejection = match &refusal {
                    ClientCertificateRejection::Token(rejection, _) => rejection.clone(),
                    _ => TokenRejection::Unknown,
                };
                certificate_refused = Some(refusal);
                rejection
            }))
        }
        (None, None) => None,
    };
    let principal = match presented {
        Some(Ok(principal)) => principal,
        rejected => {
            let (detail, error) = match rejected {
                None => (
                    "no bearer token",
                    ApiError::unauthorized(
                        "missing 'Authorization: Bearer <token>' header (the admin token is in <data-dir>/admin.token)",
                    ),
                ),
                Some(Err(TokenRejection::Expired(at))) => (
                    "expired token",
                    ApiError::unauthorized(format!(
                        "the token expired at {at}; ask an admin for a new one (`certkeeper token create` or `token rotate`)"
                    )),
                ),
                Some(_) => match &certificate_refused {
                    Some(ClientCertificateRejection::Token(_, fingerprint)) => (
                        "unbound client certificate",
                        ApiError::unauthorized(format!(
                            "no live token is bound to this client certificate (SHA-256 {fingerprint}); \
                             bind one with `certkeeper token create --client-cert cert.pem …`"
                        )),
                    ),
                    Some(refusal @ ClientCertificateRejection::Unavailable(_)) => {
                        tracing::warn!(%refusal, "refused a client certificate");
                        return Err(ServiceError::DatabaseUnreachable {
                            retry_after: ck_server::RETRY_AFTER,
                        }
                        .into());
                    }
                    Some(refusal) => (
                        "refused client certificate",
                        ApiError::unauthorized(refusal.to_string()),
                    ),
                    None => (
                        "unknown or revoked token",
                        ApiError::unauthorized("the token is not valid"),
                    ),
                },
            };
            tracing::warn!(%path, ?peer, detail, "rejected a request");
            let mut event = audit("auth.failure", "anonymous".to_owned(), "denied");
            event.status = Some(401);
            event.detail = Some(format!("{detail}: {method} {path}"));
            record_auth_failure(&gate.access, peer, event).await;
            return Err(error);
        }
    };

    let audited = method != Method::GET && method != Method::HEAD && route.action != "agent.heartbeat";
    let action = route.action.clone();
    // The body is read before any refusal below: an HTTP/2 response sent while the client
    // still sends its body ends in a stream reset that clients report as a transport error
    // instead of our 403, 429 or 503.
    let (parts, body) = request.into_parts();
    let body = if method != Method::GET && method != Method::HEAD {
        Some(to_bytes(body, crate::MAX_BODY_BYTES).await.map_err(|_| {
            ApiError::payload_too_large(format!(
                "the request body is larger than {} bytes",
                crate::MAX_BODY_BYTES
            ))
        })?)
    } else {
        None
    };
    if let Some(scope) = route.scope
        && !principal.scopes().contains(scope)
    {
        let error = ApiError::forbidden(format!(
            "this token lacks the '{scope}' scope that {method} {path} needs (it has: {})",
            if principal.scopes().is_empty() {
                "none".to_owned()
            } else {
                principal.scopes().to_string()
            }
        ));
        if audited {
            let mut event = audit(&action, principal.actor(), "denied");
            event.status = Some(403);
            event.resource = resource_of(&path);
            event.detail = Some(format!("missing scope {scope}"));
            record(gate, event).await;
        }
        return Err(error);
    }
    if route.server_wide && !principal.restriction().is_unrestricted() {
        if audited {
            let mut event = audit(&action, principal.actor(), "denied");
            event.status = Some(403);
            event.resource = resource_of(&path);
            event.detail = Some("server-wide operation, restricted token".to_owned());
            record(gate, event).await;
        }
        return Err(ApiError::forbidden(format!(
            "{method} {path} acts on state every team shares: only a token without a restriction may call it"
        )));
    }
    gate.check_rate(&principal)?;
    // During a database outage a write would only wait for the pool to give up: refuse it now.
    if method != Method::GET && method != Method::HEAD && !gate.cluster.database_reachable() {
        if audited {
            let mut event = audit(&action, principal.actor(), "failure");
            event.status = Some(503);
            event.resource = resource_of(&path);
            event.detail = Some("database unreachable".to_owned());
            record(gate, event).await;
        }
        return Err(ServiceError::DatabaseUnreachable {
            retry_after: ck_server::RETRY_AFTER,
        }
        .into());
    }

    let mut body_sha256 = None;
    let body = match body {
        Some(bytes) => {
            // Every body of this API is a JSON object (or absent): serde would otherwise fill a
            // struct from an array, field by field.
            let text = bytes.trim_ascii();
            if !(text.is_empty() || text == b"null" || text.starts_with(b"{")) {
                return Err(ApiError::unprocessable("the request body must be a JSON object"));
            }
            // The body is hashed, never stored: the record proves what was sent without keeping
            // CSRs, settings or secrets.
            if audited && !bytes.is_empty() {
                body_sha256 = Some(sha256_hex(&bytes));
            }
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let mut request = Request::from_parts(parts, body);
    let actor = principal.actor();
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if audited {
        let status = response.status();
        let note = response.extensions().get::<AuditNote>().cloned();
        let outcome = match (&note, status) {
            (Some(note), _) => note.outcome,
            (None, s) if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => "denied",
            (None, s) if s.is_client_error() || s.is_server_error() => "failure",
            _ => "success",
        };
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(resource_of);
        let mut event = audit(&action, actor, outcome);
        event.status = Some(status.as_u16());
        event.resource = location.or_else(|| resource_of(&path));
        event.body_sha256 = body_sha256;
        event.detail = note.and_then(|n| n.detail);
        record(gate, event).await;
    }
    Ok(response)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Writes an audit record. The call it describes has happened; if the record cannot be
/// written, that is logged loudly rather than turned into an error answer.
async fn record(gate: &Gate, event: AuditEvent) {
    let action = event.action.clone();
    if let Err(error) = gate.access.audit(event).await {
        tracing::error!(%error, %action, "could not write an audit record");
    }
}

#[cfg(test)]
mod tests {
    use super::resource_of;

    #[test]
    fn resources_come_from_paths() {
        assert_eq!(
            resource_of("/api/v1/certificates/0193/revoke").as_deref(),
            Some("certificates/0193")
        );
        assert_eq!(
            resource_of("/api/v1/agent/certificates/01/csr").as_deref(),
            Some("certificates/01")
        );
        assert_eq!(resource_of("/tokens/t1/rotate").as_deref(), Some("tokens/t1"));
        assert_eq!(resource_of("/api/v1/certificates"), None);
    }
}
