//! `/api/v1/certificates` handlers.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_domain::{Certificate, CertificateId, CertificateStatus, KeySource, KeyType, RevocationReason, RevocationScope};
use ck_server::{Certificates, ExportFormat, NewCertificate, Principal, ValidVersions, now};
use ck_store::CertificateFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiError;
use crate::convert::{self, parse};

/// How long `?wait=` may hold a request.
const MAX_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// Seconds to wait for the job to finish (`true` means 30; at most 120).
    #[param(pattern = "^(true|false|[0-9]{1,3}(\\.[0-9]+)?s?)$")]
    wait: Option<String>,
}

impl WaitQuery {
    fn duration(&self) -> Result<Option<Duration>, ApiError> {
        match self.wait.as_deref() {
            None | Some("false") | Some("0") => Ok(None),
            Some("true") | Some("") => Ok(Some(Duration::from_secs(30))),
            Some(text) => {
                let seconds: f64 = text.trim_end_matches('s').parse().map_err(|_| {
                    ApiError::bad_request(format!("wait: '{text}' is not a number of seconds (e.g. wait=30)"))
                })?;
                if !(seconds.is_finite() && seconds >= 0.0) {
                    return Err(ApiError::bad_request("wait: must be a positive number of seconds"));
                }
                // Bounded before the conversion: `from_secs_f64` panics on values (1e30) that
                // do not fit a Duration.
                Ok(Some(Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64()))))
            }
        }
    }
}

/// Creates a certificate and queues its issuance.
#[utoipa::path(post, path = "/certificates", operation_id = "certificate.create", tag = "certificates",
    params(WaitQuery), request_body = wire::CreateCertificate,
    responses(
        (status = 201, description = "Issued (with `wait`)", body = wire::CertificateWithJob),
        (status = 202, description = "Queued", body = wire::CertificateWithJob),
    ),
    security(("token" = ["create"])))]
pub(crate) async fn create(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<wire::CreateCertificate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let Json(body) = body?;
    let wait = query.duration()?;
    let key_type = body
        .key_type
        .as_deref()
        .map(|k| parse::<KeyType>("key_type", k))
        .transpose()?;
    let renewal_policy = body
        .renewal
        .as_ref()
        .map(|r| convert::renewal_policy(r, certificates.default_renewal()))
        .transpose()?;
    let expiry_thresholds = body
        .renewal
        .as_ref()
        .map(convert::expiry_thresholds)
        .transpose()?
        .flatten();
    let request = NewCertificate {
        name: body.name,
        common_name: body.common_name,
        sans: body.sans,
        issuer: body.issuer,
        key_type,
        csr_pem: body.csr,
        labels: body.labels,
        validity_days: body.validity_days,
        renewal_policy,
        expiry_thresholds,
        challenge: body.challenge,
        agent: body.agent,
        key_source: body
            .key_source
            .as_deref()
            .map(|k| parse::<KeySource>("key_source", k))
            .transpose()?,
        restriction: principal.restriction().clone(),
        client_auth: body.client_auth,
    };
    let (cert, job) = certificates.create_certificate(request).await?;
    let location = format!("/api/v1/certificates/{}", cert.id);
    let (cert, job) = match wait {
        Some(wait) => {
            let job = certificates.wait_for_job(job.id, wait).await?;
            (certificates.certificate(cert.id).await?, job)
        }
        None => (cert, job),
    };
    let status = if job.state.is_terminal() {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let body = wire::CertificateWithJob {
        certificate: convert::certificate(&cert, now()),
        job: convert::job(&job),
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// pending, active, expiring, failed, revoked or expired.
    #[param(pattern = "^(pending|active|expiring|failed|revoked|expired)$")]
    status: Option<String>,
    /// Only certificates whose name, common name or a DNS name contains this text (any case).
    #[param(max_length = 253)]
    q: Option<String>,
    /// Issuer id.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    issuer: Option<String>,
    /// RFC 3339 time: only certificates expiring before it.
    #[param(format = DateTime)]
    expiring_before: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Page size (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Lists the certificates the token reaches, by creation time.
#[utoipa::path(get, path = "/certificates", operation_id = "certificate.list", tag = "certificates",
    params(ListQuery),
    responses((status = 200, description = "A page", body = wire::Page<wire::Certificate>)),
    security(("token" = ["read"])))]
pub(crate) async fn list(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<wire::Page<wire::Certificate>>, ApiError> {
    let Query(query) = query?;
    let expiring_before = query
        .expiring_before
        .as_deref()
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|_| {
                ApiError::bad_request(format!(
                    "expiring_before: '{t}' is not an RFC 3339 time (e.g. 2026-12-31T00:00:00Z)"
                ))
            })
        })
        .transpose()?;
    if query.q.as_ref().is_some_and(|q| q.len() > 253) {
        return Err(ApiError::bad_request("q: search text of at most 253 characters"));
    }
    let filter = CertificateFilter {
        status: query
            .status
            .as_deref()
            .map(|s| parse::<CertificateStatus>("status", s))
            .transpose()?,
        issuer_id: query.issuer.as_deref().map(|s| parse("issuer", s)).transpose()?,
        expiring_before,
        cursor: query
            .cursor
            .as_deref()
            .map(|s| parse::<CertificateId>("cursor", s))
            .transpose()?,
        limit: convert::page_limit(query.limit, 100, 1000)?,
        search: query.q.filter(|q| !q.trim().is_empty()),
        ..CertificateFilter::default()
    };
    let page = certificates.certificates(&filter, principal.restriction()).await?;
    let now = now();
    let next_cursor = if page.more {
        page.items.last().map(|c| c.id.to_string())
    } else {
        None
    };
    Ok(Json(wire::Page {
        items: page.items.iter().map(|c| convert::certificate(c, now)).collect(),
        next_cursor,
    }))
}

/// One certificate.
#[utoipa::path(get, path = "/certificates/{id}", operation_id = "certificate.get", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id")),
    responses((status = 200, description = "The certificate", body = wire::Certificate)),
    security(("token" = ["read"])))]
pub(crate) async fn get(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Certificate>, ApiError> {
    let cert = reach(&certificates, &principal, &id).await?;
    Ok(Json(convert::certificate(&cert, now())))
}

/// What to do with a deleted certificate's versions that are still valid.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// Revoke every version still valid first (reason cessationOfOperation).
    #[serde(default)]
    revoke: bool,
    /// Delete even though versions are still valid: they stay trusted until they expire.
    #[serde(default)]
    keep_valid: bool,
}

/// Deletes a certificate and its versions (revoked serials stay on the CRL). A certificate with
/// versions still valid (not expired, not revoked) is refused with 409 unless `revoke=true`
/// (revoke them first) or `keep_valid=true` (leave them valid, on purpose).
#[utoipa::path(delete, path = "/certificates/{id}", operation_id = "certificate.delete", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id"), DeleteQuery),
    responses((status = 204, description = "Deleted")),
    security(("token" = ["delete"])))]
pub(crate) async fn delete(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query?;
    let valid = match (query.revoke, query.keep_valid) {
        (true, true) => {
            return Err(ApiError::bad_request(
                "revoke=true and keep_valid=true contradict each other: choose one",
            ));
        }
        (true, false) => ValidVersions::Revoke,
        (false, true) => ValidVersions::Keep,
        (false, false) => ValidVersions::Refuse,
    };
    let cert = reach(&certificates, &principal, &id).await?;
    certificates.delete(cert.id, valid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PemQuery {
    /// A version number; the current one by default.
    #[param(minimum = 1)]
    version: Option<u32>,
}

/// The chain (leaf first) as PEM.
#[utoipa::path(get, path = "/certificates/{id}/pem", operation_id = "certificate.pem", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id"), PemQuery),
    responses((status = 200, description = "Leaf and intermediates", body = String,
        content_type = "application/pem-certificate-chain")),
    security(("token" = ["read"])))]
pub(crate) async fn pem(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<PemQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let cert = reach(&certificates, &principal, &id).await?;
    let version = certificates.chain(cert.id, query.version).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        version.chain_pem,
    )
        .into_response())
}

/// The server-made private key as PEM.
#[utoipa::path(get, path = "/certificates/{id}/key", operation_id = "certificate.key", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id"), PemQuery),
    responses((status = 200, description = "The private key (PKCS#8)", body = String,
        content_type = "application/x-pem-file")),
    security(("token" = ["export-key"])))]
pub(crate) async fn key(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<PemQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let cert = reach(&certificates, &principal, &id).await?;
    let (_, key) = certificates.version(cert.id, query.version).await?;
    let key = key.ok_or_else(|| {
        ApiError::not_found("this certificate was issued from a CSR: its private key never reached the server")
    })?;
    let mut response = ([(header::CONTENT_TYPE, "application/x-pem-file")], key).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Renews now (or returns the job already in flight).
#[utoipa::path(post, path = "/certificates/{id}/renew", operation_id = "certificate.renew", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id"), WaitQuery),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses(
        (status = 200, description = "Renewed (with `wait`)", body = wire::CertificateWithJob),
        (status = 202, description = "Queued", body = wire::CertificateWithJob),
    ),
    security(("token" = ["update"])))]
pub(crate) async fn renew(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let id = reach(&certificates, &principal, &id).await?.id;
    let wait = query.duration()?;
    let (mut job, _created) = certificates.renew(id).await?;
    if let Some(wait) = wait {
        job = certificates.wait_for_job(job.id, wait).await?;
    }
    let cert = certificates.certificate(id).await?;
    let status = if job.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = wire::CertificateWithJob {
        certificate: convert::certificate(&cert, now()),
        job: convert::job(&job),
    };
    Ok((status, Json(body)).into_response())
}

/// Revokes every version not expired yet, or only `version` (CRL and OCSP answer at once; an
/// ACME CA revokes each one first).
#[utoipa::path(post, path = "/certificates/{id}/revoke", operation_id = "certificate.revoke", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id")),
    request_body(content = Option<wire::RevokeCertificate>, description = "The reason (optional)"),
    responses((status = 200, description = "Revoked", body = wire::Certificate)),
    security(("token" = ["delete"])))]
pub(crate) async fn revoke(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<wire::Certificate>, ApiError> {
    // The body is optional; when present it is JSON like any other (problem+json on errors).
    let body = if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        wire::RevokeCertificate::default()
    } else {
        Json::<wire::RevokeCertificate>::from_bytes(&body)?.0
    };
    let id = reach(&certificates, &principal, &id).await?.id;
    let reason = match body.reason {
        Some(reason) => parse::<RevocationReason>("reason", &reason)?,
        None => RevocationReason::Unspecified,
    };
    let scope = match body.version {
        Some(number) => RevocationScope::Version(number),
        None => RevocationScope::Unexpired,
    };
    let (cert, _) = certificates.revoke(id, reason, scope).await?;
    Ok(Json(convert::certificate(&cert, now())))
}

/// Every issued version.
#[utoipa::path(get, path = "/certificates/{id}/versions", operation_id = "certificate.versions",
    tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id")),
    responses((status = 200, description = "Versions, oldest first", body = Vec<wire::CertificateVersion>)),
    security(("token" = ["read"])))]
pub(crate) async fn versions(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Vec<wire::CertificateVersion>>, ApiError> {
    let cert = reach(&certificates, &principal, &id).await?;
    let versions = certificates.versions(cert.id).await?;
    Ok(Json(versions.iter().map(convert::version).collect()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// pem (chain and key), der (leaf) or pkcs12 (password in `x-export-password`).
    #[param(pattern = "^(pem|der|pkcs12)$")]
    format: Option<String>,
    /// A version number; the current one by default.
    #[param(minimum = 1)]
    version: Option<u32>,
}

/// The header carrying a PKCS#12 export's password (a header, not the query string, so that it
/// stays out of access logs).
const EXPORT_PASSWORD: &str = "x-export-password";

/// Downloads a version with its server-made key: PEM bundle, DER leaf or PKCS#12.
#[utoipa::path(get, path = "/certificates/{id}/export", operation_id = "certificate.export", tag = "certificates",
    params(("id" = uuid::Uuid, Path, description = "Certificate id"), ExportQuery,
        ("x-export-password" = Option<String>, Header, description = "PKCS#12 password")),
    responses((status = 200, description = "The file", content(
        (String = "application/x-pem-file"),
        (Vec<u8> = "application/pkix-cert"),
        (Vec<u8> = "application/x-pkcs12"),
    ))),
    security(("token" = ["export-key"])))]
pub(crate) async fn export(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let format = parse::<ExportFormat>("format", query.format.as_deref().unwrap_or("pem"))?;
    let password = headers.get(EXPORT_PASSWORD).and_then(|v| v.to_str().ok());
    let cert = reach(&certificates, &principal, &id).await?;
    let export = certificates.export(cert.id, query.version, format, password).await?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.file_name))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(export.content_type)),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        export.bytes,
    )
        .into_response())
}

/// The certificate if the caller's token reaches it, else 404.
async fn reach(certificates: &Certificates, principal: &Principal, id: &str) -> Result<Certificate, ApiError> {
    Ok(certificates
        .reachable_certificate(parse("certificate id", id)?, principal.restriction())
        .await?)
}
