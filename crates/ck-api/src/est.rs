//! `/.well-known/est/…` (RFC 7030): enrollment for devices with standard EST clients, without
//! certkeeper API tokens (HTTP Basic with the profile's enrollment secret).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ck_server::Est;

use crate::{ApiError, ClientCertificate};

/// base64 with a line break every 76 characters, as MIME transfer encoding writes it (LF only:
/// `base64 -d`, the usual client tool, refuses CR).
fn mime_base64(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out
}

fn base64_body(content_type: &'static str, der: &[u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                HeaderValue::from_static("base64"),
            ),
        ],
        mime_base64(der),
    )
        .into_response()
}

const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";

pub(crate) async fn cacerts(State(est): State<Est>) -> Result<Response, ApiError> {
    Ok(base64_body(CERTS_ONLY, &est.est_cacerts()?))
}

pub(crate) async fn csrattrs(State(est): State<Est>) -> Result<Response, ApiError> {
    Ok(base64_body("application/csrattrs", &est.est_csr_attributes()?))
}

/// The HTTP Basic credentials of a request, if well-formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn unauthorized() -> Response {
    let mut response =
        ApiError::unauthorized("EST enrollment needs HTTP Basic credentials: the profile's user and enrollment secret")
            .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"certkeeper EST\""),
    );
    response
}

pub(crate) async fn simpleenroll(
    State(est): State<Est>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some((user, password)) = basic_credentials(&headers) else {
        est.est_csr_attributes()?; // a server without EST says so first
        return Ok(unauthorized());
    };
    if !est.est_credentials_ok(&user, &password)? {
        tracing::warn!(user = %user, "EST enrollment with wrong credentials");
        return Ok(unauthorized());
    }
    let pkcs7 = est.est_enroll(&body).await?;
    Ok(base64_body(CERTS_ONLY, &pkcs7))
}

/// Re-enrollment: authenticated by the current certificate, presented as the TLS client
/// certificate (so only over the server's TLS listener).
pub(crate) async fn simplereenroll(
    State(est): State<Est>,
    client: Option<Extension<ClientCertificate>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(Extension(ClientCertificate(leaf))) = client else {
        est.est_csr_attributes()?;
        return Err(ApiError::unauthorized(
            "simplereenroll authenticates with the current certificate as the TLS client certificate \
             (https with --cert/--key); without one, enroll with simpleenroll and the enrollment secret",
        ));
    };
    let pkcs7 = est.est_reenroll(&leaf, &body).await?;
    Ok(base64_body(CERTS_ONLY, &pkcs7))
}
