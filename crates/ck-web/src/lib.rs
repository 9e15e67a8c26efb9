//! The operator's web UI, served at `/ui`: server-rendered HTML (askama templates checked at
//! compile time), plain forms, one embedded stylesheet, no script and no outside asset, so it
//! works offline and behind any proxy.
//!
//! Sign-in is with an API token: the token is kept in an HttpOnly, SameSite=Strict cookie
//! (Secure when the server speaks TLS) and checked on every request exactly as the API checks
//! it, so revoking a token ends its sessions on every node at once and scopes and restrictions
//! mean the same here as in the API. Every form carries a CSRF token derived from the session.

mod error;
mod pages;
mod session;
mod state;
mod view;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use ck_server::ControlPlane;

use state::WebState;

pub use session::SESSION_COOKIE;

/// The UI's routes, to be nested at `/ui`.
pub fn router(control_plane: ControlPlane, secure_cookies: bool) -> Router {
    let web = WebState::new(&control_plane, secure_cookies);
    let signed_in = Router::new()
        .route("/", get(pages::dashboard))
        .route(
            "/certificates",
            get(pages::certificates).post(pages::create_certificate),
        )
        .route("/certificates/new", get(pages::new_certificate))
        .route("/certificates/{id}", get(pages::certificate))
        .route("/certificates/{id}/renew", post(pages::renew))
        .route("/certificates/{id}/revoke", post(pages::revoke))
        .route("/certificates/{id}/chain.pem", get(pages::chain_pem))
        .route("/certificates/{id}/export.p12", post(pages::export_pkcs12))
        .route("/issuers", get(pages::issuers))
        .route("/agents", get(pages::agents))
        .route("/jobs", get(pages::jobs))
        .route("/tokens", get(pages::tokens).post(pages::create_token))
        .route("/tokens/{id}/revoke", post(pages::revoke_token))
        .route("/audit", get(pages::audit))
        .route("/notifications", get(pages::notifications))
        .route("/notifications/{id}/requeue", post(pages::requeue_notification))
        .route("/logout", post(session::logout))
        .route_layer(axum::middleware::from_fn_with_state(web.clone(), session::require));
    Router::new()
        .merge(signed_in)
        .route("/login", get(session::login_form).post(session::login))
        .route("/static/{file}", get(static_file))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

/// `/ui/` (the nest answers `/ui` only): to the dashboard.
pub async fn redirect_to_root() -> Redirect {
    Redirect::permanent("/ui")
}

/// Headers of every UI answer: no framing, no sniffing, only our own resources, and pages
/// (which show inventory data) never cached; the versioned static files are cached.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[derive(rust_embed::Embed)]
#[folder = "static/"]
struct Assets;

/// The embedded static files. Their URLs carry the crate version (`?v=`), so a year of caching
/// is safe: a new release asks for new URLs.
async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match Assets::get(&file) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.metadata.mimetype().to_owned()),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_owned()),
            ],
            asset.data,
        )
            .into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
