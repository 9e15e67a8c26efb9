//! `/api/v1/certificates` handlers.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ck_api_types as wire;
use ck_domain::{CertificateId, CertificateStatus, KeySource, KeyType, RevocationReason};
use ck_server::{ControlPlane, ExportFormat, NewCertificate, now};
use ck_store::CertificateFilter;
use serde::Deserialize;

use crate::ApiError;
use crate::convert::{self, parse};

/// How long `?wait=` may hold a request.
const MAX_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    /// Seconds to wait for the job to finish (`true` means 30).
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
                Ok(Some(Duration::from_secs_f64(seconds).min(MAX_WAIT)))
            }
        }
    }
}

pub(crate) async fn create(
    State(control_plane): State<ControlPlane>,
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
        .map(|r| convert::renewal_policy(r, control_plane.default_renewal()))
        .transpose()?;
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
        challenge: body.challenge,
        agent: body.agent,
        key_source: body
            .key_source
            .as_deref()
            .map(|k| parse::<KeySource>("key_source", k))
            .transpose()?,
    };
    let (cert, job) = control_plane.create_certificate(request).await?;
    let location = format!("/api/v1/certificates/{}", cert.id);
    let (cert, job) = match wait {
        Some(wait) => {
            let job = control_plane.wait_for_job(job.id, wait).await?;
            (control_plane.certificate(cert.id).await?, job)
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    issuer: Option<String>,
    expiring_before: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list(
    State(control_plane): State<ControlPlane>,
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
        limit: query.limit.unwrap_or(100),
    };
    let page = control_plane.certificates(&filter).await?;
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

pub(crate) async fn get(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
) -> Result<Json<wire::Certificate>, ApiError> {
    let cert = control_plane.certificate(parse("certificate id", &id)?).await?;
    Ok(Json(convert::certificate(&cert, now())))
}

pub(crate) async fn delete(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    control_plane.delete(parse("certificate id", &id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PemQuery {
    version: Option<u32>,
}

pub(crate) async fn pem(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
    query: Result<Query<PemQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let (version, _) = control_plane
        .version(parse("certificate id", &id)?, query.version)
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        version.chain_pem,
    )
        .into_response())
}

pub(crate) async fn key(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
    query: Result<Query<PemQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let (_, key) = control_plane
        .version(parse("certificate id", &id)?, query.version)
        .await?;
    let key = key.ok_or_else(|| {
        ApiError::not_found("this certificate was issued from a CSR: its private key never reached the server")
    })?;
    let mut response = ([(header::CONTENT_TYPE, "application/x-pem-file")], key).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub(crate) async fn renew(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let id = parse("certificate id", &id)?;
    let wait = query.duration()?;
    let (mut job, _created) = control_plane.renew(id).await?;
    if let Some(wait) = wait {
        job = control_plane.wait_for_job(job.id, wait).await?;
    }
    let cert = control_plane.certificate(id).await?;
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

pub(crate) async fn revoke(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
    body: Option<Json<wire::RevokeCertificate>>,
) -> Result<Json<wire::Certificate>, ApiError> {
    let id = parse("certificate id", &id)?;
    let reason = match body.and_then(|Json(b)| b.reason) {
        Some(reason) => parse::<RevocationReason>("reason", &reason)?,
        None => RevocationReason::Unspecified,
    };
    let cert = control_plane.revoke(id, reason).await?;
    Ok(Json(convert::certificate(&cert, now())))
}

pub(crate) async fn versions(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
) -> Result<Json<Vec<wire::CertificateVersion>>, ApiError> {
    let versions = control_plane.versions(parse("certificate id", &id)?).await?;
    Ok(Json(versions.iter().map(convert::version).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    format: Option<String>,
    version: Option<u32>,
}

/// The header carrying a PKCS#12 export's password (a header, not the query string, so that it
/// stays out of access logs).
const EXPORT_PASSWORD: &str = "x-export-password";

/// `GET /certificates/{id}/export?format=pem|der|pkcs12[&version=N]`.
pub(crate) async fn export(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let format = parse::<ExportFormat>("format", query.format.as_deref().unwrap_or("pem"))?;
    let password = headers.get(EXPORT_PASSWORD).and_then(|v| v.to_str().ok());
    let export = control_plane
        .export(parse("certificate id", &id)?, query.version, format, password)
        .await?;
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
