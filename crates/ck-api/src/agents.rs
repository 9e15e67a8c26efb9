//! Agent registration (admin) and the agents' own endpoints (agent tokens).

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_server::{AGENT_POLL_INTERVAL, AgentInfo, ControlPlane, Principal};
use ck_store::AgentFacts;

use crate::ApiError;

fn agent(info: &AgentInfo) -> wire::Agent {
    let r = &info.record;
    wire::Agent {
        id: r.id.clone(),
        name: r.name.clone(),
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
    let (info, token) = control_plane.create_agent(&body.name).await?;
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
    let Principal::Agent(agent_id) = principal else {
        return Err(ApiError::forbidden("this endpoint is for agents"));
    };
    let facts = AgentFacts {
        hostname: body.hostname,
        os: body.os,
        arch: body.arch,
        version: body.version,
    };
    let info = control_plane.agent_heartbeat(&agent_id, facts).await?;
    Ok(Json(wire::HeartbeatAnswer {
        agent: agent(&info),
        poll_interval_seconds: u64::try_from(AGENT_POLL_INTERVAL.whole_seconds()).unwrap_or(30),
    }))
}
