//! The HTTP face of the control plane: axum routes under `/api/v1`, bearer-token
//! authentication, and the one mapping from errors to `application/problem+json`.
//!
//! Handlers stay thin: parse the request, call a `ControlPlane` method, convert the answer to a
//! wire type from `ck-api-types`.

mod agents;
mod auth;
mod certificates;
mod convert;
mod error;
mod est;
mod ops;
mod pki;
mod scep;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use ck_server::ControlPlane;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// The client certificate of a TLS connection (leaf, DER), put in the request's extensions by
/// the listener after the TLS layer verified it against the local CA.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Vec<u8>);

/// The largest request body accepted (a CSR with 100 names fits many times over).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP application.
pub fn router(control_plane: ControlPlane) -> Router {
    let api = Router::new()
        .route("/certificates", post(certificates::create).get(certificates::list))
        .route(
            "/certificates/{id}",
            get(certificates::get).delete(certificates::delete),
        )
        .route("/certificates/{id}/pem", get(certificates::pem))
        .route("/certificates/{id}/key", get(certificates::key))
        .route("/certificates/{id}/export", get(certificates::export))
        .route("/certificates/{id}/renew", post(certificates::renew))
        .route("/certificates/{id}/revoke", post(certificates::revoke))
        .route("/certificates/{id}/versions", get(certificates::versions))
        .route("/issuers", get(ops::issuers).post(ops::create_issuer))
        .route("/issuers/{id}", get(ops::issuer))
        .route("/issuers/{id}/account/rollover", post(ops::rollover_account_key))
        .route("/issuers/{id}/account/deactivate", post(ops::deactivate_account))
        .route("/issuers/{id}/ca.pem", get(ops::issuer_ca_pem))
        .route("/agents", get(agents::list).post(agents::create))
        .route("/agent/heartbeat", post(agents::heartbeat))
        .route("/agent/work", get(agents::work))
        .route("/agent/certificates/{id}/csr", post(agents::submit_csr))
        .route("/agent/certificates/{id}/bundle", get(agents::bundle))
        .route("/agent/certificates/{id}/deployments", post(agents::report_deployment))
        .route("/jobs", get(ops::jobs))
        .route("/jobs/{id}", get(ops::job))
        .fallback(ops::api_not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            auth::AuthGuard::new(control_plane.clone()),
            auth::require_token,
        ));
    let challenges = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(ops::acme_http01))
        .with_state(control_plane.challenge_responder());
    Router::new()
        .nest("/api/v1", api)
        .merge(challenges)
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/pki/crl/{issuer}", get(pki::crl))
        .route("/.well-known/est/cacerts", get(est::cacerts))
        .route("/.well-known/est/csrattrs", get(est::csrattrs))
        .route("/.well-known/est/simpleenroll", post(est::simpleenroll))
        .route("/.well-known/est/simplereenroll", post(est::simplereenroll))
        .route("/scep", get(scep::get).post(scep::post))
        .route("/pki/ocsp/{issuer}", post(pki::ocsp_post))
        .route("/pki/ocsp/{issuer}/{*request}", get(pki::ocsp_get))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(control_plane)
}

/// The http-01 responder alone, for the challenge listeners (port 80 by default): it answers
/// `/.well-known/acme-challenge/{token}` and nothing else.
pub fn acme_challenge_router(responder: ck_acme::ChallengeResponder) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(ops::acme_http01))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found\n") })
        .with_state(responder)
}
