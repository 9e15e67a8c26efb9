//! The HTTP face of the control plane: axum routes under `/api/v1`, bearer-token
//! authentication, and the one mapping from errors to `application/problem+json`.
//!
//! Handlers stay thin: parse the request, call a method of the service they use, convert the
//! answer to a wire type from `ck-api-types`. A handler takes the services it touches as axum
//! `State` (sub-states of [`ApiState`]), so its signature says which capability it uses.

mod agents;
mod audit;
mod auth;
mod certificates;
mod convert;
mod error;
mod est;
mod notifications;
mod openapi;
mod ops;
mod pki;
mod scep;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRef;
use axum::routing::{get, post};
use ck_server::{
    Access, Agents, Certificates, Cluster, ControlPlane, Est, Issuers, Monitoring, Notifications, Pki, Scep,
};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::REQUEST_ID;
pub use error::ApiError;

/// The client certificate of a TLS connection (leaf, DER), put in the request's extensions by
/// the listener after the TLS layer verified it against the local CA.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Vec<u8>);

/// The services the handlers use, each one a sub-state (`State<Certificates>`...).
#[derive(Clone, FromRef)]
struct ApiState {
    certificates: Certificates,
    issuers: Issuers,
    access: Access,
    agents: Agents,
    pki: Pki,
    est: Est,
    scep: Scep,
    notifications: Notifications,
    monitoring: Monitoring,
    cluster: Cluster,
}

impl ApiState {
    fn new(plane: &ControlPlane) -> Self {
        Self {
            certificates: plane.certificates.clone(),
            issuers: plane.issuers.clone(),
            access: plane.access.clone(),
            agents: plane.agents.clone(),
            pki: plane.pki.clone(),
            est: plane.est.clone(),
            scep: plane.scep.clone(),
            notifications: plane.notifications.clone(),
            monitoring: plane.monitoring.clone(),
            cluster: plane.cluster.clone(),
        }
    }
}

/// The largest request body accepted (a CSR with 100 names fits many times over).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/api/v1` operations with their OpenAPI descriptions. Every handler is registered
/// through `routes!`, so the document lists exactly the routes that exist.
fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(certificates::create, certificates::list))
        .routes(routes!(certificates::get, certificates::delete))
        .routes(routes!(certificates::pem))
        .routes(routes!(certificates::key))
        .routes(routes!(certificates::export))
        .routes(routes!(certificates::renew))
        .routes(routes!(certificates::revoke))
        .routes(routes!(certificates::versions))
        .routes(routes!(ops::issuers, ops::create_issuer))
        .routes(routes!(ops::issuer))
        .routes(routes!(ops::rollover_account_key))
        .routes(routes!(ops::deactivate_account))
        .routes(routes!(ops::issuer_ca_pem))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::revoke))
        .routes(routes!(agents::heartbeat))
        .routes(routes!(agents::work))
        .routes(routes!(agents::submit_csr))
        .routes(routes!(agents::bundle))
        .routes(routes!(agents::report_deployment))
        .routes(routes!(ops::jobs))
        .routes(routes!(ops::job))
        .routes(routes!(ops::cancel_job))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::rotate))
        .routes(routes!(tokens::whoami))
        .routes(routes!(audit::list))
        .routes(routes!(ops::cluster))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::get))
        .routes(routes!(notifications::requeue))
}

/// The OpenAPI document of `/api/v1`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = api_routes().split_for_parts();
    openapi::finish(api)
}

/// The whole HTTP application.
pub fn router(control_plane: ControlPlane) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    let doc = openapi::finish(doc);
    let table = openapi::AccessTable::from_openapi(&doc);
    let state = ApiState::new(&control_plane);
    let doc_json = Arc::new(serde_json::to_string(&doc).unwrap_or_default());
    let api = api
        .fallback(ops::api_not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            auth::Gate::new(state.access.clone(), state.cluster.clone(), table),
            auth::gate,
        ))
        // The document is public: it describes the API, it holds no data.
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.as_ref().clone(),
                    )
                }
            }),
        );
    let challenges = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(ops::acme_http01))
        .with_state(state.issuers.challenge_responder());
    Router::new()
        .nest(openapi::API_PREFIX, api)
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
        .with_state(state)
}

/// The http-01 responder alone, for the challenge listeners (port 80 by default): it answers
/// `/.well-known/acme-challenge/{token}` and nothing else.
pub fn acme_challenge_router(responder: ck_acme::ChallengeResponder) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(ops::acme_http01))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found\n") })
        .with_state(responder)
}
