//! `/scep` (RFC 8894 §4): `?operation=GetCACaps|GetCACert|PKIOperation`; PKIOperation by POST
//! (the DER message as the body) or GET (`&message=` base64). No certkeeper credentials: a
//! PKCSReq carries the profile's challenge password, a RenewalReq is signed with the current
//! certificate.
//!
//! PKIOperation is rate-limited per client address (`ScepProfile::rate_limit`): 429 with
//! Retry-After. Behind a reverse proxy every client shares the proxy's address, as for the
//! API's failed-authentication limit.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ck_server::Scep;
use serde::Deserialize;

use crate::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct ScepQuery {
    operation: Option<String>,
    message: Option<String>,
}

fn binary(content_type: &'static str, body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

/// The client's address, where the listener recorded it.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// 429 when the client has used up its PKIOperations, before any work on the message.
fn admit(scep: &Scep, peer: &Peer) -> Result<(), ApiError> {
    let Some(Extension(ConnectInfo(addr))) = peer else {
        return Ok(());
    };
    scep.scep_admit(addr.ip()).map_err(|wait| {
        ApiError::too_many_requests(
            format!(
                "too many SCEP PKIOperations from {}; wait before sending more",
                addr.ip()
            ),
            wait,
        )
    })
}

async fn pki_operation(scep: &Scep, message: &[u8]) -> Result<Response, ApiError> {
    let answer = scep.scep_pki_operation(message).await?;
    Ok(binary("application/x-pki-message", answer))
}

fn operation(query: &ScepQuery) -> Result<&str, ApiError> {
    query.operation.as_deref().ok_or_else(|| {
        ApiError::bad_request("SCEP needs ?operation= (GetCACaps, GetCACert or PKIOperation)".to_owned())
    })
}

pub(crate) async fn get(
    State(scep): State<Scep>,
    peer: Peer,
    Query(query): Query<ScepQuery>,
) -> Result<Response, ApiError> {
    match operation(&query)? {
        "GetCACaps" => Ok((
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            scep.scep_capabilities()?,
        )
            .into_response()),
        "GetCACert" => {
            let certs = scep.scep_ca_certs().await?;
            Ok(binary(certs.content_type, certs.der))
        }
        "PKIOperation" => {
            admit(&scep, &peer)?;
            let message = query.message.as_deref().unwrap_or_default();
            let compact: String = message.chars().filter(|c| !c.is_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|e| {
                ApiError::bad_request(format!(
                    "message: not base64 ({e}); send the DER PKIOperation base64-encoded"
                ))
            })?;
            pki_operation(&scep, &der).await
        }
        other => Err(ApiError::bad_request(format!(
            "operation '{other}' (expected GetCACaps, GetCACert or PKIOperation)"
        ))),
    }
}

pub(crate) async fn post(
    State(scep): State<Scep>,
    peer: Peer,
    Query(query): Query<ScepQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    match operation(&query)? {
        "PKIOperation" => {
            admit(&scep, &peer)?;
            pki_operation(&scep, &body).await
        }
        other => Err(ApiError::bad_request(format!(
            "operation '{other}' by POST (only PKIOperation is posted)"
        ))),
    }
}
