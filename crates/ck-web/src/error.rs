//! Why a page could not be shown, and the error page that says so. A leaf module: the pages
//! and the session gate both answer with it, so it depends on neither.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ck_server::ServiceError;

/// Why a page could not be shown; rendered as a page of its own with the right status.
#[derive(Debug)]
pub(crate) enum WebError {
    Forbidden(String),
    NotFound(String),
    Invalid(String),
    Conflict(String),
    Unavailable(String),
    Internal,
}

impl From<ServiceError> for WebError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Invalid(m) => Self::Invalid(m),
            ServiceError::NotFound(m) => Self::NotFound(format!("{m} not found")),
            ServiceError::Forbidden(m) => Self::Forbidden(m),
            ServiceError::Conflict(m) | ServiceError::Upstream(m) => Self::Conflict(m),
            error @ ServiceError::DatabaseUnreachable { .. } => Self::Unavailable(error.to_string()),
            error => {
                // Store and internal failures are logged, never shown.
                tracing::error!(%error, "web UI request failed");
                Self::Internal
            }
        }
    }
}

impl From<FormRejection> for WebError {
    fn from(rejection: FormRejection) -> Self {
        Self::Invalid(format!("the form could not be read: {}", rejection.body_text()))
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: String,
    version: &'static str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Self::Invalid(m) => (StatusCode::BAD_REQUEST, "Cannot do that", m),
            Self::Conflict(m) => (StatusCode::CONFLICT, "Cannot do that now", m),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Try again soon", m),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "the server could not finish this; its log says why".to_owned(),
            ),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message,
            version: env!("CARGO_PKG_VERSION"),
        };
        (status, page).into_response()
    }
}
