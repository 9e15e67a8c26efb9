//! Bearer-token authentication of every `/api` call.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use ck_server::{ControlPlane, Principal};

use crate::ApiError;

pub(crate) async fn require_token(
    State(control_plane): State<ControlPlane>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing 'Authorization: Bearer <token>' header (the admin token is in <data-dir>/admin.token)",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .unwrap_or_default();
    let Some(principal) = Some(token)
        .filter(|t| !t.is_empty())
        .and_then(|t| control_plane.tokens().verify(t))
    else {
        tracing::warn!(path = %request.uri().path(), "rejected a request with an invalid token");
        return Err(ApiError::unauthorized("the token is not valid"));
    };
    // Agent tokens reach only the agent endpoints, and admin tokens only the rest: a stolen
    // agent token cannot read other hosts' certificates or change the inventory.
    // Inside the `/api/v1` nest the prefix is already stripped.
    let path = request.uri().path();
    let agent_path = path.starts_with("/agent/") || path.starts_with("/api/v1/agent/");
    match (&principal, agent_path) {
        (Principal::Agent { .. }, false) => {
            return Err(ApiError::forbidden(
                "an agent token only works on /api/v1/agent/…; use an admin token for this endpoint",
            ));
        }
        (Principal::Admin, true) => {
            return Err(ApiError::forbidden(
                "this endpoint is for agents: use the agent's own token (from `certkeeper agents add`)",
            ));
        }
        _ => {}
    }
    let mut request = request;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}
