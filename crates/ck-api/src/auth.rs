//! Bearer-token authentication of every `/api` call, with a throttle on failed attempts per
//! client address so that tokens cannot be guessed at network speed.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use ck_domain::TokenBuckets;
use ck_server::{ControlPlane, Principal};

use crate::ApiError;

/// Failed authentications an address may make at once…
const FAILURE_BURST: u32 = 20;
/// …and then one per this many seconds.
const FAILURE_REFILL_SECONDS: f64 = 3.0;
/// Addresses tracked at most (full buckets are dropped first).
const FAILURE_KEYS: usize = 100_000;

/// The authentication middleware's state.
#[derive(Clone)]
pub(crate) struct AuthGuard {
    control_plane: ControlPlane,
    failures: Arc<Mutex<TokenBuckets<IpAddr>>>,
    origin: Instant,
}

impl AuthGuard {
    pub(crate) fn new(control_plane: ControlPlane) -> Self {
        Self {
            control_plane,
            failures: Arc::new(Mutex::new(TokenBuckets::new(
                FAILURE_BURST,
                1.0 / FAILURE_REFILL_SECONDS,
                FAILURE_KEYS,
            ))),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// 429 when `peer` has used up its failed attempts.
    fn check(&self, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(peer), Ok(failures)) = (peer, self.failures.lock()) else {
            return Ok(());
        };
        match failures.retry_after(&peer, self.now()) {
            None => Ok(()),
            Some(wait) => Err(ApiError::too_many_requests(
                format!("too many failed authentications from {peer}; wait before trying again"),
                wait,
            )),
        }
    }

    fn failed(&self, peer: Option<IpAddr>, error: ApiError) -> ApiError {
        if let (Some(peer), Ok(mut failures)) = (peer, self.failures.lock()) {
            failures.spend(&peer, self.now());
        }
        error
    }
}

pub(crate) async fn require_token(
    State(guard): State<AuthGuard>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    guard.check(peer)?;
    let control_plane = &guard.control_plane;
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Err(guard.failed(
            peer,
            ApiError::unauthorized(
                "missing 'Authorization: Bearer <token>' header (the admin token is in <data-dir>/admin.token)",
            ),
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
        tracing::warn!(path = %request.uri().path(), ?peer, "rejected a request with an invalid token");
        return Err(guard.failed(peer, ApiError::unauthorized("the token is not valid")));
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
