//! Notification handlers: the delivery log, and requeueing dead notifications. Admin only: a
//! notification describes certificates, issuers and agents beyond any token restriction.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_server::{Notifications, Principal};
use ck_store::{NotificationFilter, NotificationRecord, NotificationState};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiError;
use crate::convert::{self, parse};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NotificationQuery {
    /// pending, sending, delivered or dead.
    #[param(pattern = "^(pending|sending|delivered|dead)$")]
    state: Option<String>,
    /// Only this notifier's.
    notifier: Option<String>,
    /// Only events about this certificate.
    #[param(format = Uuid)]
    certificate: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Lists notifications, newest first.
#[utoipa::path(get, path = "/notifications", operation_id = "notification.list", tag = "notifications",
    params(NotificationQuery),
    responses((status = 200, description = "A page", body = wire::Page<wire::Notification>)),
    security(("token" = ["admin"])))]
pub(crate) async fn list(
    State(notifications): State<Notifications>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<NotificationQuery>, QueryRejection>,
) -> Result<Json<wire::Page<wire::Notification>>, ApiError> {
    let Query(query) = query?;
    let filter = NotificationFilter {
        state: query
            .state
            .as_deref()
            .map(|s| parse::<NotificationState>("state", s))
            .transpose()?,
        notifier: query.notifier,
        certificate_id: query
            .certificate
            .as_deref()
            .map(|s| parse("certificate", s))
            .transpose()?,
        before: query.cursor,
        limit: convert::page_limit(query.limit, 100, 1000)?,
    };
    let (records, more) = notifications.notifications(&principal, &filter).await?;
    let next_cursor = if more {
        records.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(wire::Page {
        items: records.iter().map(notification).collect(),
        next_cursor,
    }))
}

/// One notification.
#[utoipa::path(get, path = "/notifications/{id}", operation_id = "notification.get", tag = "notifications",
    params(("id" = String, Path, description = "Notification id")),
    responses((status = 200, description = "The notification", body = wire::Notification)),
    security(("token" = ["admin"])))]
pub(crate) async fn get(
    State(notifications): State<Notifications>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Notification>, ApiError> {
    Ok(Json(notification(&notifications.notification(&principal, &id).await?)))
}

/// Puts a dead notification back in the queue with a fresh attempt budget.
#[utoipa::path(post, path = "/notifications/{id}/requeue", operation_id = "notification.requeue",
    tag = "notifications",
    params(("id" = String, Path, description = "Notification id")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses(
        (status = 200, description = "Requeued", body = wire::Notification),
        (status = 409, description = "Not dead", body = wire::Problem),
    ),
    security(("token" = ["admin"])))]
pub(crate) async fn requeue(
    State(notifications): State<Notifications>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Notification>, ApiError> {
    Ok(Json(notification(
        &notifications.requeue_notification(&principal, &id).await?,
    )))
}

fn notification(record: &NotificationRecord) -> wire::Notification {
    let payload = &record.event.payload;
    wire::Notification {
        id: record.id.clone(),
        notifier: record.notifier.clone(),
        state: record.state.as_str().to_owned(),
        event: record.event.kind.as_str().to_owned(),
        certificate_id: record.event.certificate_id.map(|id| id.to_string()),
        subject: record.event.subject.clone(),
        summary: payload
            .get("subject")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        attempts: record.attempts,
        next_attempt_at: record.next_attempt_at,
        last_error: record.last_error.clone(),
        delivered_at: record.delivered_at,
        occurred_at: record.event.created_at,
        payload: payload.clone(),
    }
}
