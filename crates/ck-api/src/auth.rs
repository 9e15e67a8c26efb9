//! Bearer-token authentication of every `/api` call.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use ck_server::ControlPlane;

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
    if token.is_empty() || !control_plane.tokens().verify(token) {
        tracing::warn!(path = %request.uri().path(), "rejected a request with an invalid token");
        return Err(ApiError::unauthorized("the token is not valid"));
    }
    Ok(next.run(request).await)
}
