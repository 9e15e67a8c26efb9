//! Issuers, jobs, health, readiness and metrics handlers.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ck_api_types as wire;
use ck_domain::{JobId, JobState};
use ck_server::ControlPlane;
use ck_store::JobFilter;
use serde::Deserialize;

use crate::ApiError;
use crate::convert::{self, parse};

pub(crate) async fn issuers(State(control_plane): State<ControlPlane>) -> Json<Vec<wire::Issuer>> {
    Json(control_plane.issuers().iter().map(convert::issuer).collect())
}

pub(crate) async fn issuer(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
) -> Result<Json<wire::Issuer>, ApiError> {
    Ok(Json(convert::issuer(&control_plane.issuer(&id)?)))
}

pub(crate) async fn issuer_ca_pem(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let issuer = control_plane.issuer(&id)?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], issuer.ca_pem).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobQuery {
    state: Option<String>,
    certificate: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn jobs(
    State(control_plane): State<ControlPlane>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Json<wire::Page<wire::Job>>, ApiError> {
    let Query(query) = query?;
    let filter = JobFilter {
        state: query
            .state
            .as_deref()
            .map(|s| parse::<JobState>("state", s))
            .transpose()?,
        certificate_id: query
            .certificate
            .as_deref()
            .map(|s| parse("certificate", s))
            .transpose()?,
        cursor: query
            .cursor
            .as_deref()
            .map(|s| parse::<JobId>("cursor", s))
            .transpose()?,
        limit: query.limit.unwrap_or(100),
    };
    let (jobs, more) = control_plane.jobs(&filter).await?;
    let next_cursor = if more {
        jobs.last().map(|j| j.id.to_string())
    } else {
        None
    };
    Ok(Json(wire::Page {
        items: jobs.iter().map(convert::job).collect(),
        next_cursor,
    }))
}

pub(crate) async fn job(
    State(control_plane): State<ControlPlane>,
    Path(id): Path<String>,
) -> Result<Json<wire::Job>, ApiError> {
    Ok(Json(convert::job(&control_plane.job(parse("job id", &id)?).await?)))
}

pub(crate) async fn health() -> &'static str {
    "ok\n"
}

pub(crate) async fn ready(State(control_plane): State<ControlPlane>) -> Response {
    match control_plane.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

pub(crate) async fn metrics(State(control_plane): State<ControlPlane>) -> Result<Response, ApiError> {
    let text = control_plane.render_metrics().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub(crate) async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API endpoint (see /api/v1/certificates, /api/v1/issuers, /api/v1/jobs)")
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such page (the API is under /api/v1)")
}
