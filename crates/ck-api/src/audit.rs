//! `GET /api/v1/audit`: the audit trail, filtered, as JSON pages or CSV.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_server::{Access, Principal};
use ck_store::{AuditFilter, AuditRecord};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::IntoParams;

use crate::ApiError;
use crate::convert;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Exactly this actor (`token:admin`, `agent:web-1`, `system`, `anonymous`).
    actor: Option<String>,
    /// This action, or all under a prefix ending with `.` (`certificate.`).
    action: Option<String>,
    /// Exactly this resource (`certificates/<id>`).
    resource: Option<String>,
    /// success, failure or denied.
    #[param(pattern = "^(success|failure|denied)$")]
    outcome: Option<String>,
    /// RFC 3339: at or after.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339: before.
    #[param(format = DateTime)]
    until: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Page size (1 to 10,000; default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// json (default) or csv.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

fn time_param(name: &str, text: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|t| {
        OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
            ApiError::bad_request(format!(
                "{name}: '{t}' is not an RFC 3339 time (e.g. 2026-11-23T00:00:00Z)"
            ))
        })
    })
    .transpose()
}

/// Audit events, oldest first.
#[utoipa::path(get, path = "/audit", operation_id = "audit.list", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of events, or all matching events as CSV", content(
        (wire::Page<wire::AuditEvent> = "application/json"),
        (String = "text/csv"),
    ))),
    security(("token" = ["admin"])))]
pub(crate) async fn list(
    State(access): State<Access>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request(format!("format: '{other}' is not json or csv"))),
    };
    let outcome = query.outcome;
    if let Some(outcome) = outcome.as_deref()
        && !["success", "failure", "denied"].contains(&outcome)
    {
        return Err(ApiError::bad_request(format!(
            "outcome: '{outcome}' is not success, failure or denied"
        )));
    }
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        resource: query.resource,
        outcome,
        since: time_param("since", query.since.as_deref())?,
        until: time_param("until", query.until.as_deref())?,
        cursor: query
            .cursor
            .map(|c| {
                uuid::Uuid::parse_str(&c)
                    .map(|u| u.to_string())
                    .map_err(|_| ApiError::bad_request(format!("cursor: '{c}' is not an event id (a UUID)")))
            })
            .transpose()?,
        limit: convert::page_limit(query.limit, if csv { 10_000 } else { 100 }, 10_000)?,
        newest_first: false,
    };
    let (events, more) = access.audit_events(&principal, &filter).await?;
    if csv {
        let text = ck_server::audit_csv(&events);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"certkeeper-audit.csv\"",
                ),
            ],
            text,
        )
            .into_response());
    }
    let next_cursor = if more {
        events.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(wire::Page {
        items: events.iter().map(event).collect(),
        next_cursor,
    })
    .into_response())
}

fn event(record: &AuditRecord) -> wire::AuditEvent {
    wire::AuditEvent {
        id: record.id.clone(),
        at: record.at,
        actor: record.actor.clone(),
        action: record.action.clone(),
        resource: record.resource.clone(),
        request_id: record.request_id.clone(),
        outcome: record.outcome.clone(),
        status: record.status,
        client: record.client.clone(),
        body_sha256: record.body_sha256.clone(),
        detail: record.detail.clone(),
    }
}
