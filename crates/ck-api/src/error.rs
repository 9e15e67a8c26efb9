//! The single mapping from failures to RFC 9457 problem documents. Internal details (store
//! errors, panics) are logged, never sent.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ck_api_types::{PROBLEM_CONTENT_TYPE, Problem};
use ck_server::ServiceError;

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    /// `Retry-After`, for 429 and 503.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// 400 with a detail saying what to fix.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid-request",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 413.
    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "body-too-large",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 405 (the caller adds `Allow`).
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            kind: "method-not-allowed",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 415: a state-changing call that is not JSON.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "unsupported-media-type",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 422: well-formed JSON of the wrong shape.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid-body",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "forbidden",
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate-limited",
            detail: detail.into(),
            retry_after: Some(retry_after),
        }
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not-found",
            detail: detail.into(),
            retry_after: None,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(detail) => Self::bad_request(detail),
            ServiceError::NotFound(what) => Self::not_found(format!("{what} not found")),
            ServiceError::Forbidden(detail) => Self::forbidden(detail),
            ServiceError::Conflict(detail) => Self {
                status: StatusCode::CONFLICT,
                kind: "conflict",
                detail,
                retry_after: None,
            },
            ServiceError::DatabaseUnreachable { retry_after } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "database-unreachable",
                detail: "the database does not answer: certificate reads are served from this node's cache, \
                         writes are refused until it is back; try again after Retry-After"
                    .to_owned(),
                retry_after: Some(retry_after),
            },
            ServiceError::Upstream(detail) => Self {
                status: StatusCode::BAD_GATEWAY,
                kind: "upstream",
                detail,
                retry_after: None,
            },
            other => {
                tracing::error!(error = %other, "request failed");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    kind: "unavailable",
                    detail: "the server cannot complete the request right now; try again later".to_owned(),
                    retry_after: None,
                }
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let detail = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with 'Content-Type: application/json'".to_owned()
            }
            JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                format!("the request body is larger than {} bytes", crate::MAX_BODY_BYTES)
            }
            other => other.body_text(),
        };
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body-too-large"
        } else {
            "invalid-body"
        };
        Self {
            status,
            kind,
            detail,
            retry_after: None,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            problem_type: format!("urn:certkeeper:problem:{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let mut response = (self.status, Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
