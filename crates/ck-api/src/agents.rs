//! Agent registration (admin) and the agents' own endpoints (agent tokens).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_domain::CertificateId;
use ck_server::{AGENT_POLL_INTERVAL, AgentInfo, AgentScope, Agents, DeploymentReport, Principal, now};
use ck_store::AgentFacts;

use crate::ApiError;
use crate::auth::AuditNote;
use crate::convert::{self, parse};

fn agent(info: &AgentInfo) -> wire::Agent {
    let r = &info.record;
    wire::Agent {
        id: r.id.clone(),
        name: r.name.clone(),
        scope: r.scope.clone(),
        labels: r.labels.as_map().clone(),
        status: info.status.as_str().to_owned(),
        hostname: r.facts.hostname.clone(),
        os: r.facts.os.clone(),
        arch: r.facts.arch.clone(),
        version: r.facts.version.clone(),
        last_seen: r.last_seen,
        created_at: r.created_at,
    }
}

/// Registers an agent and returns its token (shown once). A restricted token's agent gets
/// the restriction's labels.
#[utoipa::path(post, path = "/agents", operation_id = "agent.create", tag = "agents",
    request_body = wire::CreateAgent,
    responses((status = 201, description = "Registered", body = wire::CreatedAgent)),
    security(("token" = ["admin"])))]
pub(crate) async fn create(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<wire::CreateAgent>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let scope = match body.scope.as_deref() {
        Some(scope) => parse::<AgentScope>("scope", scope)?,
        None => AgentScope::Deploy,
    };
    let (info, token) = agents
        .create_agent(&body.name, scope, body.labels, principal.restriction())
        .await?;
    let location = format!("/api/v1/agents/{}", info.record.id);
    let created = wire::CreatedAgent {
        agent: agent(&info),
        token,
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

/// Every agent the token reaches (a restricted token: those carrying its labels), with its status.
#[utoipa::path(get, path = "/agents", operation_id = "agent.list", tag = "agents",
    responses((status = 200, description = "Agents", body = Vec<wire::Agent>)),
    security(("token" = ["read"])))]
pub(crate) async fn list(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<wire::Agent>>, ApiError> {
    let agents = agents.reachable_agents(principal.restriction()).await?;
    Ok(Json(agents.iter().map(agent).collect()))
}

/// Revokes an agent's token (by id or name): the agent is locked out, its certificates stay.
/// An agent the token does not reach is not found.
#[utoipa::path(post, path = "/agents/{id}/revoke", operation_id = "agent.revoke", tag = "agents",
    params(("id" = String, Path, description = "Agent id or name")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses((status = 200, description = "Revoked", body = wire::Agent)),
    security(("token" = ["admin"])))]
pub(crate) async fn revoke(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Agent>, ApiError> {
    Ok(Json(agent(&agents.revoke_agent(&id, principal.restriction()).await?)))
}

/// An agent reports its host (agent token).
#[utoipa::path(post, path = "/agent/heartbeat", operation_id = "agent.heartbeat", tag = "agent protocol",
    request_body = wire::Heartbeat,
    responses((status = 200, description = "Seen", body = wire::HeartbeatAnswer)),
    security(("token" = ["agent"])))]
pub(crate) async fn heartbeat(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<wire::Heartbeat>, JsonRejection>,
) -> Result<Json<wire::HeartbeatAnswer>, ApiError> {
    let Json(body) = body?;
    let (agent_id, _) = agent_of(principal)?;
    let facts = AgentFacts {
        hostname: body.hostname,
        os: body.os,
        arch: body.arch,
        version: body.version,
    };
    let info = agents.agent_heartbeat(&agent_id, facts).await?;
    Ok(Json(wire::HeartbeatAnswer {
        agent: agent(&info),
        poll_interval_seconds: poll_interval_seconds(),
    }))
}

fn agent_of(principal: Principal) -> Result<(String, AgentScope), ApiError> {
    match principal {
        Principal::Agent { id, scope, .. } => Ok((id, scope)),
        Principal::Operator(_) => Err(ApiError::forbidden(
            "this endpoint is for agents: use the agent's own token (from `certkeeper agents add`)",
        )),
    }
}

fn poll_interval_seconds() -> u64 {
    u64::try_from(AGENT_POLL_INTERVAL.whole_seconds()).unwrap_or(30)
}

/// The agent's certificates and what each needs (agent token).
#[utoipa::path(get, path = "/agent/work", operation_id = "agent.work", tag = "agent protocol",
    responses((status = 200, description = "Work list", body = wire::AgentWork)),
    security(("token" = ["agent"])))]
pub(crate) async fn work(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<wire::AgentWork>, ApiError> {
    let (agent_id, _) = agent_of(principal)?;
    let now = now();
    let certificates = agents
        .agent_work(&agent_id)
        .await?
        .into_iter()
        .map(|item| {
            let cert = item.certificate;
            wire::AgentWorkItem {
                id: cert.id.to_string(),
                sans: cert.sans.iter().map(ToString::to_string).collect(),
                labels: cert.labels.as_map().clone(),
                key_source: cert.key_source.as_str().to_owned(),
                key_type: cert.key_type.to_string(),
                status: cert.status_at(now).to_string(),
                version: cert.current_version,
                fingerprint: cert.fingerprint,
                not_after: cert.not_after,
                job: item.job.map(|j| j.to_string()),
                csr_wanted: item.csr_wanted,
                name: cert.name,
            }
        })
        .collect();
    Ok(Json(wire::AgentWork {
        poll_interval_seconds: poll_interval_seconds(),
        certificates,
    }))
}

/// The agent sends a CSR for one of its certificates (agent token).
#[utoipa::path(post, path = "/agent/certificates/{id}/csr", operation_id = "agent.csr", tag = "agent protocol",
    params(("id" = uuid::Uuid, Path, description = "Certificate id")), request_body = wire::AgentCsr,
    responses((status = 202, description = "The job now runs", body = wire::Job)),
    security(("token" = ["agent"])))]
pub(crate) async fn submit_csr(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<wire::AgentCsr>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (agent_id, scope) = agent_of(principal)?;
    let Json(body) = body?;
    let id = parse::<CertificateId>("certificate id", &id)?;
    let job = agents.submit_agent_csr(&agent_id, scope, id, &body.csr).await?;
    Ok((StatusCode::ACCEPTED, Json(convert::job(&job))).into_response())
}

/// The chain to deploy (and the key, for server-made keys) (agent token).
#[utoipa::path(get, path = "/agent/certificates/{id}/bundle", operation_id = "agent.bundle",
    tag = "agent protocol", params(("id" = uuid::Uuid, Path, description = "Certificate id")),
    responses((status = 200, description = "The bundle", body = wire::AgentBundle)),
    security(("token" = ["agent"])))]
pub(crate) async fn bundle(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (agent_id, _) = agent_of(principal)?;
    let id = parse::<CertificateId>("certificate id", &id)?;
    let bundle = agents.agent_bundle(&agent_id, id).await?;
    let body = wire::AgentBundle {
        certificate_id: bundle.certificate.id.to_string(),
        name: bundle.certificate.name.clone(),
        version: bundle.version.version,
        fingerprint: bundle.version.fingerprint.clone(),
        chain_pem: bundle.version.chain_pem.clone(),
        private_key_pem: bundle.private_key_pem,
        not_after: bundle.version.not_after,
    };
    // The bundle may carry a key: no cache may keep it.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// The agent reports a deployment's outcome (agent token).
#[utoipa::path(post, path = "/agent/certificates/{id}/deployments", operation_id = "agent.deployment",
    tag = "agent protocol", params(("id" = uuid::Uuid, Path, description = "Certificate id")),
    request_body = wire::DeploymentReport,
    responses((status = 201, description = "Recorded as a finished deploy job", body = wire::Job)),
    security(("token" = ["agent"])))]
pub(crate) async fn report_deployment(
    State(agents): State<Agents>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<wire::DeploymentReport>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (agent_id, _) = agent_of(principal)?;
    let Json(body) = body?;
    let id = parse::<CertificateId>("certificate id", &id)?;
    let report = DeploymentReport {
        version: body.version,
        fingerprint: body.fingerprint,
        targets: body.targets,
        error: body.error,
    };
    let (failed, version) = (report.error.is_some(), report.version);
    let job = agents.report_deployment(&agent_id, id, report).await?;
    let mut response = (StatusCode::CREATED, Json(convert::job(&job))).into_response();
    // The call succeeded either way; the audit record tells whether the deployment did.
    response.extensions_mut().insert(AuditNote {
        outcome: if failed { "failure" } else { "success" },
        detail: Some(format!("version {version}")),
    });
    Ok(response)
}
