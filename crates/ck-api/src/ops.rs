//! Issuers, jobs, health, readiness and metrics handlers.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_acme::ChallengeResponder;
use ck_api_types as wire;
use ck_domain::{JobId, JobState};
use ck_server::{Access, Certificates, Cluster, Issuers, Monitoring, Principal};
use ck_store::JobFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiError;
use crate::convert::{self, parse};

/// Every issuer, with health.
#[utoipa::path(get, path = "/issuers", operation_id = "issuer.list", tag = "issuers",
    responses((status = 200, description = "Issuers", body = Vec<wire::Issuer>)),
    security(("token" = ["read"])))]
pub(crate) async fn issuers(State(issuers): State<Issuers>) -> Result<Json<Vec<wire::Issuer>>, ApiError> {
    Ok(Json(issuers.issuers().await?.iter().map(convert::issuer).collect()))
}

/// One issuer.
#[utoipa::path(get, path = "/issuers/{id}", operation_id = "issuer.get", tag = "issuers",
    params(("id" = String, Path, description = "Issuer id")),
    responses((status = 200, description = "The issuer", body = wire::Issuer)),
    security(("token" = ["read"])))]
pub(crate) async fn issuer(
    State(issuers): State<Issuers>,
    Path(id): Path<String>,
) -> Result<Json<wire::Issuer>, ApiError> {
    Ok(Json(convert::issuer(&issuers.issuer(&id).await?)))
}

/// Adds an ACME issuer and registers its account.
#[utoipa::path(post, path = "/issuers", operation_id = "issuer.create", tag = "issuers",
    request_body = wire::CreateIssuer,
    responses((status = 201, description = "Added", body = wire::Issuer)),
    security(("token" = ["admin"])))]
pub(crate) async fn create_issuer(
    State(issuers): State<Issuers>,
    body: Result<Json<wire::CreateIssuer>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    if body.kind != "acme" {
        return Err(ApiError::bad_request(format!(
            "kind `{}` cannot be added: only `acme` issuers are added at run time (the local CA exists already)",
            body.kind
        )));
    }
    let issuer = issuers.add_acme_issuer(&body.id, body.acme).await?;
    let location = format!("/api/v1/issuers/{}", issuer.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(convert::issuer(&issuer)),
    )
        .into_response())
}

/// Replaces the ACME account key (RFC 8555 §7.3.5).
#[utoipa::path(post, path = "/issuers/{id}/account/rollover", operation_id = "issuer.account_rollover",
    tag = "issuers", params(("id" = String, Path, description = "Issuer id")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses((status = 200, description = "Rolled over", body = wire::Issuer)),
    security(("token" = ["admin"])))]
pub(crate) async fn rollover_account_key(
    State(issuers): State<Issuers>,
    Path(id): Path<String>,
) -> Result<Json<wire::Issuer>, ApiError> {
    Ok(Json(convert::issuer(&issuers.rollover_account_key(&id).await?)))
}

/// Deactivates the ACME account at the CA.
#[utoipa::path(post, path = "/issuers/{id}/account/deactivate", operation_id = "issuer.account_deactivate",
    tag = "issuers", params(("id" = String, Path, description = "Issuer id")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses((status = 200, description = "Deactivated", body = wire::Issuer)),
    security(("token" = ["admin"])))]
pub(crate) async fn deactivate_account(
    State(issuers): State<Issuers>,
    Path(id): Path<String>,
) -> Result<Json<wire::Issuer>, ApiError> {
    Ok(Json(convert::issuer(&issuers.deactivate_account(&id).await?)))
}

/// The local CA's root certificate, to trust.
#[utoipa::path(get, path = "/issuers/{id}/ca.pem", operation_id = "issuer.ca_pem", tag = "issuers",
    params(("id" = String, Path, description = "Issuer id")),
    responses((status = 200, description = "The root, PEM", body = String, content_type = "application/x-pem-file")),
    security(("token" = ["read"])))]
pub(crate) async fn issuer_ca_pem(
    State(issuers): State<Issuers>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let issuer = issuers.issuer(&id).await?;
    let pem = issuer.ca_pem.ok_or_else(|| {
        ApiError::not_found(format!(
            "issuer '{id}' is an ACME CA: its roots come with each certificate's chain, not from certkeeper"
        ))
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

/// `GET /.well-known/acme-challenge/{token}`: the key authorization of a pending http-01
/// challenge (RFC 8555 §8.3). Unauthenticated, as the CA must reach it.
pub(crate) async fn acme_http01(State(responder): State<ChallengeResponder>, Path(token): Path<String>) -> Response {
    match responder.http01_anywhere(&token).await {
        Some(key_authorization) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobQuery {
    /// pending, running, succeeded, failed or cancelled.
    #[param(pattern = "^(pending|running|succeeded|failed|cancelled)$")]
    state: Option<String>,
    /// Only this certificate's jobs (required with a restricted token).
    #[param(format = Uuid)]
    certificate: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Page size (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Lists jobs, oldest first.
#[utoipa::path(get, path = "/jobs", operation_id = "job.list", tag = "jobs",
    params(JobQuery),
    responses((status = 200, description = "A page", body = wire::Page<wire::Job>)),
    security(("token" = ["read"])))]
pub(crate) async fn jobs(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Json<wire::Page<wire::Job>>, ApiError> {
    let Query(query) = query?;
    let restricted = !principal.restriction().is_unrestricted();
    if restricted && query.certificate.is_none() {
        return Err(ApiError::forbidden(
            "a restricted token lists the jobs of one certificate at a time: add ?certificate=<id>",
        ));
    }
    if let Some(certificate) = query.certificate.as_deref().filter(|_| restricted) {
        certificates
            .reachable_certificate(parse("certificate", certificate)?, principal.restriction())
            .await?;
    }
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
        limit: convert::page_limit(query.limit, 100, 1000)?,
    };
    let (jobs, more) = certificates.jobs(&filter).await?;
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

/// Cancels a pending job: queued, backing off after a failure, or waiting for an agent's CSR.
/// A running or finished job is refused with 409.
#[utoipa::path(post, path = "/jobs/{id}/cancel", operation_id = "job.cancel", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses((status = 200, description = "The cancelled job", body = wire::Job)),
    security(("token" = ["update"])))]
pub(crate) async fn cancel_job(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Job>, ApiError> {
    let id = parse("job id", &id)?;
    let job = certificates.job(id).await?;
    if !principal.restriction().is_unrestricted() {
        certificates
            .reachable_certificate(job.certificate_id, principal.restriction())
            .await
            .map_err(|_| ApiError::not_found(format!("job {id} not found")))?;
    }
    let job = certificates.cancel_job(id, &principal.actor()).await?;
    Ok(Json(convert::job(&job)))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", operation_id = "job.get", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = wire::Job)),
    security(("token" = ["read"])))]
pub(crate) async fn job(
    State(certificates): State<Certificates>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Job>, ApiError> {
    let job = certificates.job(parse("job id", &id)?).await?;
    if !principal.restriction().is_unrestricted() {
        certificates
            .reachable_certificate(job.certificate_id, principal.restriction())
            .await
            .map_err(|_| ApiError::not_found(format!("job {id} not found")))?;
    }
    Ok(Json(convert::job(&job)))
}

/// The nodes on this database, the leader and its epoch.
#[utoipa::path(get, path = "/cluster", operation_id = "cluster.get", tag = "cluster",
    responses((status = 200, description = "The cluster", body = wire::Cluster)),
    security(("token" = ["read"])))]
pub(crate) async fn cluster(State(cluster): State<Cluster>) -> Result<Json<wire::Cluster>, ApiError> {
    let view = cluster.cluster().await?;
    let now = ck_server::now();
    let gone_after = time::Duration::try_from(ck_server::LEASE_TTL).unwrap_or(time::Duration::seconds(10));
    let leader = view.leader.as_ref().map(|(holder, _)| holder.clone());
    let nodes = view
        .nodes
        .into_iter()
        .map(|node| {
            let role = if Some(&node.node_id) == leader.as_ref() {
                "leader"
            } else if now - node.last_seen > gone_after {
                "gone"
            } else {
                "follower"
            };
            wire::ClusterNode {
                role: role.to_owned(),
                node_id: node.node_id,
                address: node.address,
                version: node.version,
                started_at: node.started_at,
                last_seen: node.last_seen,
            }
        })
        .collect();
    Ok(Json(wire::Cluster {
        node_id: view.node_id,
        leader,
        epoch: view.leader.map(|(_, epoch)| epoch),
        nodes,
    }))
}

pub(crate) async fn health() -> &'static str {
    "ok\n"
}

pub(crate) async fn ready(State(cluster): State<Cluster>) -> Response {
    match cluster.ping_database().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// OpenMetrics to those who ask for it (Prometheus does), the classic text format otherwise.
/// Only for a bearer token with the `metrics` scope: the series tell which issuers, notifiers
/// and (when enabled) certificates exist.
pub(crate) async fn metrics(
    State(access): State<Access>,
    State(monitoring): State<Monitoring>,
    connection: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The same failed-authentication limit as the API and the web UI: a token cannot be
    // guessed faster here.
    let peer = connection.map(|Extension(axum::extract::ConnectInfo(addr))| addr.ip());
    crate::auth::refuse_if_throttled(&access, peer)?;
    let refused = |detail: &str| {
        let mut event = ck_server::AuditEvent::new("auth.failure", "anonymous", "denied");
        event.client = peer.map(|p| p.to_string());
        event.status = Some(401);
        event.detail = Some(format!("{detail}: GET /metrics"));
        event
    };
    let token = crate::auth::bearer_token(&headers).ok_or_else(|| {
        ApiError::unauthorized(
            "/metrics needs a token with the metrics scope: `Authorization: Bearer <token>` (create one with \
                 `certkeeper token create --name prometheus --scope metrics`)",
        )
    })?;
    let principal = match access.verify_token(token) {
        Ok(principal) => principal,
        Err(_) => {
            crate::auth::record_auth_failure(&access, peer, refused("unknown or revoked token")).await;
            return Err(ApiError::unauthorized(
                "the token is not valid (unknown, revoked or expired)",
            ));
        }
    };
    if !principal.scopes().contains(ck_domain::Scope::Metrics) {
        return Err(ApiError::forbidden("this token lacks the metrics scope"));
    }
    let text = monitoring.render_metrics().await?;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            ck_server::prometheus_text(&text),
        )
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

pub(crate) async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API endpoint (see /api/v1/certificates, /api/v1/issuers, /api/v1/jobs)")
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such page (the API is under /api/v1)")
}
