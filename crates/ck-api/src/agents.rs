//! Agent registration (admin) and the agents' own endpoints (agent tokens).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_domain::CertificateId;
use ck_server::{AGENT_POLL_INTERVAL, AgentInfo, AgentScope, ControlPlane, DeploymentReport, Principal, now};
use ck_store::AgentFacts;

use crate::ApiError;
use crate::convert::{self, parse};

fn agent(info: &AgentInfo) -> wire::Agent {
    let r = &info.record;
    wire::Agent {
        id: r.id.clone(),
        name: r.name.clone(),
        scope: r.scope.clone(),
        status: info.status.as_str().to_owned(),
        hostname: r.facts.hostname.clone(),
        os: r.facts.os.clone(),
        arch: r.facts.arch.clone(),
        version: r.facts.version.clone(),
        last_seen: r.last_seen,
        created_at: r.created_at,
    }
}

pub(crate) async fn create(
    State(control_plane): State<ControlPlane>,
    body: Result<Json<wire::CreateAgent>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let scope = match body.scope.as_deref() {
        Some(scope) => parse::<AgentScope>("scope", scope)?,
        None => AgentScope::Deploy,
    };
    let (info, token) = control_plane.create_agent(&body.name, scope).await?;
    let location = format!("/api/v1/agents/{}", info.record.id);
    let created = wire::CreatedAgent {
        agent: agent(&info),
        token,
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

pub(crate) async fn list(State(control_plane): State<ControlPlane>) -> Result<Json<Vec<wire::Agent>>, ApiError> {
    Ok(Json(control_plane.agents().await?.iter().map(agent).collect()))
}

pub(crate) async fn heartbeat(
    State(control_plane): State<ControlPlane>,
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
    let info = control_plane.agent_heartbeat(&agent_id, facts).await?;
    Ok(Json(wire::HeartbeatAnswer {
        agent: agent(&info),
        poll_interval_seconds: poll_interval_seconds(),
    }))
}

fn agent_of(principal: Principal) -> Result<(String, AgentScope), ApiError> {
    match principal {
        Principal::Agent { id, scope } => Ok((id, scope)),
        Principal::Admin => Err(ApiError::forbidden("this endpoint is for agents")),
    }
}

fn poll_interval_seconds() -> u64 {
    u64::try_from(AGENT_POLL_INTERVAL.whole_seconds()).unwrap_or(30)
}

pub(crate) async fn work(
    State(control_plane): State<ControlPlane>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<wire::AgentWork>, ApiError> {
    let (agent_id, _) = agent_of(principal)?;
    let now = now();
    let certificates = control_plane
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

pub(crate) async fn submit_csr(
    State(control_plane): State<ControlPlane>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<wire::AgentCsr>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (agent_id, scope) = agent_of(principal)?;
    let Json(body) = body?;
    let id = parse::<CertificateId>("certificate id", &id)?;
    let job = control_plane.submit_agent_csr(&agent_id, scope, id, &body.csr).await?;
    Ok((StatusCode::ACCEPTED, Json(convert::job(&job))).into_response())
}

pub(crate) async fn bundle(
    State(control_plane): State<ControlPlane>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (agent_id, _) = agent_of(principal)?;
    let id = parse::<CertificateId>("certificate id", &id)?;
    let bundle = control_plane.agent_bundle(&agent_id, id).await?;
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

pub(crate) async fn report_deployment(
    State(control_plane): State<ControlPlane>,
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
    let job = control_plane.report_deployment(&agent_id, id, report).await?;
    Ok((StatusCode::CREATED, Json(convert::job(&job))).into_response())
}
