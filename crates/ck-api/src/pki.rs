//! `/pki/…`: what relying parties fetch without credentials (CRLs; OCSP and EST next).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ck_server::{Pki, now};
use serde::Deserialize;

use crate::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrlQuery {
    /// `der` (default) or `pem`.
    format: Option<String>,
}

/// `GET /pki/crl/{issuer}`: DER (`application/pkix-crl`), or PEM with `?format=pem` or
/// `Accept: application/x-pem-file`.
pub(crate) async fn crl(
    State(pki): State<Pki>,
    Path(issuer): Path<String>,
    Query(query): Query<CrlQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wants_pem = match query.format.as_deref() {
        Some("pem") => true,
        Some("der") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format: '{other}' (expected der or pem)"
            )));
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/x-pem-file")),
    };
    let crl = pki.crl(&issuer).await?;
    // Caches may keep it until it would be refreshed anyway, at most an hour.
    let max_age = (crl.next_update - now()).whole_seconds().clamp(0, 3600);
    let cache =
        HeaderValue::from_str(&format!("public, max-age={max_age}")).unwrap_or(HeaderValue::from_static("no-cache"));
    let (content_type, body) = if wants_pem {
        ("application/x-pem-file", crl.pem().into_bytes())
    } else {
        ("application/pkix-crl", crl.der.clone())
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}

/// The largest OCSP request accepted (a request for 32 certificates with a signature is far
/// below it).
const MAX_OCSP_REQUEST: usize = 16 * 1024;

fn ocsp_response(answer: ck_server::OcspAnswer, cacheable: bool) -> Response {
    let cache = if cacheable && answer.cached {
        HeaderValue::from_static("public, max-age=3600")
    } else {
        HeaderValue::from_static("no-store")
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/ocsp-response"),
            ),
            (header::CACHE_CONTROL, cache),
        ],
        answer.der.as_ref().clone(),
    )
        .into_response()
}

/// `POST /pki/ocsp/{issuer}` with a DER `application/ocsp-request` body (RFC 6960 A.1).
pub(crate) async fn ocsp_post(
    State(pki): State<Pki>,
    Path(issuer): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_OCSP_REQUEST {
        return Err(ApiError::bad_request(format!(
            "the OCSP request is {} bytes; at most {MAX_OCSP_REQUEST} are accepted",
            body.len()
        )));
    }
    let answer = pki.ocsp(&issuer, &body).await?;
    Ok(ocsp_response(answer, false))
}

/// `GET /pki/ocsp/{issuer}/{base64 request}` (RFC 6960 A.1: URL-encoded base64 of the DER).
pub(crate) async fn ocsp_get(
    State(pki): State<Pki>,
    Path((issuer, encoded)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    use base64::Engine;
    // Some clients leave the base64 unencoded in the path or turn '+' into ' '.
    let cleaned: String = encoded.trim_start_matches('/').replace(' ', "+");
    let der = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .unwrap_or_default();
    if der.len() > MAX_OCSP_REQUEST {
        return Err(ApiError::bad_request(
            "the OCSP request is too large for a GET; POST it",
        ));
    }
    // Bad base64 is answered like any malformed request: in band, with malformedRequest.
    let answer = pki.ocsp(&issuer, &der).await?;
    Ok(ocsp_response(answer, true))
}
