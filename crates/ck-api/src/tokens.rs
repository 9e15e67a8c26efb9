//! `/api/v1/tokens`: operator tokens (admin scope), and `/api/v1/token`: the caller's own.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ck_api_types as wire;
use ck_domain::{Restriction, Scopes, parse_lifetime};
use ck_server::{Access, NewToken, Principal, TokenInfo};

use crate::ApiError;

fn token(info: &TokenInfo) -> wire::Token {
    wire::Token {
        id: info.id.clone(),
        name: info.name.clone(),
        prefix: info.prefix.clone(),
        scopes: info.scopes.to_list(),
        labels: info.restriction.labels().clone(),
        name_suffixes: info.restriction.name_suffixes().to_vec(),
        status: info.status.as_str().to_owned(),
        expires_at: info.expires_at,
        revoked_at: info.revoked_at,
        rotated_at: info.rotated_at,
        created_by: info.created_by.clone(),
        created_at: info.created_at,
        client_subject: info.client_subject.clone(),
        client_cert_sha256: info.client_cert_sha256.clone(),
    }
}

/// Every token within the caller's reach (scopes a subset of its own, restriction at least as
/// narrow), revoked and expired ones included (never their secrets).
#[utoipa::path(get, path = "/tokens", operation_id = "token.list", tag = "tokens",
    responses((status = 200, description = "Tokens", body = Vec<wire::Token>)),
    security(("token" = ["admin"])))]
pub(crate) async fn list(
    State(access): State<Access>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<wire::Token>>, ApiError> {
    Ok(Json(access.tokens(&principal).await?.iter().map(token).collect()))
}

/// Makes a token with some of the caller's scopes; the answer shows it this once.
#[utoipa::path(post, path = "/tokens", operation_id = "token.create", tag = "tokens",
    request_body = wire::CreateToken,
    responses((status = 201, description = "Created", body = wire::CreatedToken)),
    security(("token" = ["admin"])))]
pub(crate) async fn create(
    State(access): State<Access>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<wire::CreateToken>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let scopes: Scopes = body
        .scopes
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: ck_domain::UnknownScope| ApiError::bad_request(format!("scopes: {e}")))?;
    let lifetime_seconds = body
        .expires_in
        .as_deref()
        .map(parse_lifetime)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?;
    let restriction = if body.labels.is_empty() && body.name_suffixes.is_empty() {
        None
    } else {
        Some(
            Restriction::new(body.labels, body.name_suffixes)
                .map_err(|e| ApiError::bad_request(format!("restriction: {e}")))?,
        )
    };
    let new = NewToken {
        name: body.name,
        scopes,
        restriction,
        lifetime_seconds,
        client_cert_sha256: body.client_cert_sha256,
    };
    let (info, secret) = access.create_token(&principal, new).await?;
    let location = format!("/api/v1/tokens/{}", info.id);
    let created = wire::CreatedToken {
        token: secret,
        details: token(&info),
    };
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Json(created),
    )
        .into_response())
}

/// Revokes a token (by id or name) within the caller's reach; it stops working at once.
#[utoipa::path(post, path = "/tokens/{id}/revoke", operation_id = "token.revoke", tag = "tokens",
    params(("id" = String, Path, description = "Token id or name")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses((status = 200, description = "Revoked", body = wire::Token)),
    security(("token" = ["admin"])))]
pub(crate) async fn revoke(
    State(access): State<Access>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<wire::Token>, ApiError> {
    Ok(Json(token(&access.revoke_token(&principal, &id).await?)))
}

/// Gives a token within the caller's reach a new secret (same name, scopes, expiry); the old
/// one stops working.
#[utoipa::path(post, path = "/tokens/{id}/rotate", operation_id = "token.rotate", tag = "tokens",
    params(("id" = String, Path, description = "Token id or name")),
    request_body(content = Option<wire::EmptyBody>, description = "Nothing, or {}: sent as application/json"),
    responses((status = 200, description = "Rotated", body = wire::CreatedToken)),
    security(("token" = ["admin"])))]
pub(crate) async fn rotate(
    State(access): State<Access>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (info, secret) = access.rotate_token(&principal, &id).await?;
    let rotated = wire::CreatedToken {
        token: secret,
        details: token(&info),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(rotated)).into_response())
}

/// What the presented token is and may do (any valid token).
#[utoipa::path(get, path = "/token", operation_id = "token.whoami", tag = "tokens",
    responses((status = 200, description = "The caller", body = wire::Whoami)),
    security(("token" = [])))]
pub(crate) async fn whoami(Extension(principal): Extension<Principal>) -> Json<wire::Whoami> {
    Json(wire::Whoami {
        actor: principal.actor(),
        scopes: principal.scopes().to_list(),
        labels: principal.restriction().labels().clone(),
        name_suffixes: principal.restriction().name_suffixes().to_vec(),
    })
}
