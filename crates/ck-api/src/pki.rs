//! `/pki/…`: what relying parties fetch without credentials (CRLs; OCSP and EST next).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ck_server::{ControlPlane, now};
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
    State(control_plane): State<ControlPlane>,
    Path(issuer): Path<String>,
    Query(query): Query<CrlQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wants_pem = match query.format.as_deref() {
        Some("pem") => true,
        Some("der") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!("format: '{other}' (expected der or pem)")));
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/x-pem-file")),
    };
    let crl = control_plane.crl(&issuer).await?;
    // Caches may keep it until it would be refreshed anyway, at most an hour.
    let max_age = (crl.next_update - now()).whole_seconds().clamp(0, 3600);
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age}")).unwrap_or(HeaderValue::from_static("no-cache"));
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
