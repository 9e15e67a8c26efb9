//! Sign-in with an API token, the session cookie, and CSRF tokens.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ck_domain::Scope;
use ck_server::{Access, AuditEvent, Operator, Principal};
use serde::Deserialize;

use crate::error::WebError;
use crate::state::SecureCookies;
use crate::view::Page;

/// The cookie that holds the signed-in token.
pub const SESSION_COOKIE: &str = "ck_session";

/// The cookie that ties the sign-in form to the browser that loaded it (login CSRF: a page on
/// another site must not sign a victim's browser in with the attacker's token). SameSite=Strict,
/// so a cross-site form post never carries it.
const LOGIN_COOKIE: &str = "ck_login";

/// The signed-in operator, as every page sees it.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) operator: Operator,
    /// The form token of this session.
    pub(crate) csrf: String,
}

impl Session {
    /// The signed-in token as the services see a caller.
    pub(crate) fn principal(&self) -> Principal {
        Principal::Operator(self.operator.clone())
    }

    /// Whether the token has `scope`.
    pub(crate) fn can(&self, scope: Scope) -> bool {
        self.operator.scopes.contains(scope)
    }

    /// `Ok` when the token has `scope`, else the page that says which scope is missing.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), WebError> {
        if self.can(scope) {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "this needs a token with the {scope} scope; sign in with one that has it"
            )))
        }
    }

    /// `Ok` when a form's CSRF field is this session's (compared in constant time).
    pub(crate) fn check_csrf(&self, presented: &str) -> Result<(), WebError> {
        if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), self.csrf.as_bytes()).is_ok() {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "the form expired or came from another site: reload the page and try again".to_owned(),
            ))
        }
    }

    /// A form post's gate: its CSRF field is this session's, and the token has `scope`.
    pub(crate) fn authorize(&self, csrf: &str, scope: Scope) -> Result<(), WebError> {
        self.check_csrf(csrf)?;
        self.require(scope)
    }

    /// Records an action of this session on `resource` (`certificates/<id>`…) in the audit trail.
    pub(crate) async fn record(&self, access: &Access, action: &str, resource: String, detail: Option<String>) {
        let mut event = AuditEvent::new(action, format!("token:{}", self.operator.name), "success");
        event.resource = Some(resource);
        event.detail = detail;
        audit_event(access, event).await;
    }

    /// The frame every page shares.
    pub(crate) fn page(&self, title: &str, section: &'static str) -> Page {
        Page {
            title: title.to_owned(),
            section,
            actor: self.operator.name.clone(),
            csrf: self.csrf.clone(),
            admin: self.can(Scope::Admin),
            server_admin: self.can(Scope::Admin) && self.operator.restriction.is_unrestricted(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The CSRF token of a session: derived from its token, so every node computes the same one
/// and a page on another site, which never sees the cookie, cannot.
fn csrf_of(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("certkeeper-ui-csrf\0{token}").as_bytes(),
    );
    hex::encode(&digest.as_ref()[..16])
}

/// The session token in a request's cookies.
fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// A cookie's value. Parsed by hand: plain name=value pairs, no attributes to read.
fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
}

/// Lets signed-in operators through with their [`Session`]; everyone else goes to the login
/// page (a form post too: it cannot be replayed without a session anyway).
pub(crate) async fn require(State(access): State<Access>, mut request: Request, next: Next) -> Response {
    let operator = session_token(request.headers()).and_then(|token| match access.verify_token(&token) {
        Ok(Principal::Operator(operator)) => Some((operator, token)),
        _ => None,
    });
    let Some((operator, token)) = operator else {
        let next_page = match request.uri().path_and_query().map(|p| p.as_str()) {
            None | Some("/") => "/ui".to_owned(),
            Some(path) => format!("/ui{path}"),
        };
        let target = format!("/ui/login?next={}", percent_encode(&next_page));
        return Redirect::to(&target).into_response();
    };
    request.extensions_mut().insert(Session {
        operator,
        csrf: csrf_of(&token),
    });
    next.run(request).await
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    error: Option<String>,
    next: String,
    /// The form's half of the login CSRF pair (the cookie holds the other).
    login_csrf: String,
    version: &'static str,
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// The sign-in form with a fresh login CSRF value, in the form and in a cookie.
fn login_page(cookies: &SecureCookies, status: StatusCode, error: Option<String>, next: String) -> Response {
    let mut value = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut value).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the system random generator failed\n").into_response();
    }
    let login_csrf = hex::encode(value);
    let page = LoginPage {
        error,
        next,
        login_csrf: login_csrf.clone(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let mut response = (status, page).into_response();
    let secure = if cookies.0 { "; Secure" } else { "" };
    let cookie = format!("{LOGIN_COOKIE}={login_csrf}; Path=/ui/login; HttpOnly; SameSite=Strict{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub(crate) async fn login_form(State(cookies): State<SecureCookies>, Query(query): Query<LoginQuery>) -> Response {
    login_page(&cookies, StatusCode::OK, None, safe_next(query.next.as_deref()))
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    login_csrf: String,
}

pub(crate) async fn login(
    State(access): State<Access>,
    State(cookies): State<SecureCookies>,
    connection: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let peer = connection.map(|axum::Extension(ConnectInfo(addr))| addr.ip());
    let token = form.token.trim();
    let next = safe_next(form.next.as_deref());
    let refused =
        |status: StatusCode, message: &str| login_page(&cookies, status, Some(message.to_owned()), next.clone());
    // The same limit as the API's: a token guessed here counts there, and the other way round.
    if let Some(peer) = peer
        && let Err(wait) = access.auth_failure_wait(peer)
    {
        let mut response = refused(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many failed sign-ins from {peer}; wait {} s before trying again",
                wait.as_secs().max(1)
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty()
        || aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), form.login_csrf.as_bytes()).is_err()
    {
        return refused(
            StatusCode::FORBIDDEN,
            "the sign-in form expired or came from another site: sign in from this page",
        );
    }
    let failed = |actor: String, detail: &str| {
        let mut event = AuditEvent::new("ui.login", actor, "denied");
        event.client = peer.map(|p| p.to_string());
        event.status = Some(401);
        event.detail = Some(format!("web UI: {detail}"));
        event
    };
    match access.verify_token(token) {
        Ok(Principal::Operator(operator)) => {
            audit(&access, "ui.login", operator.name.clone(), "success").await;
            let mut response = Redirect::to(&next).into_response();
            let secure = if cookies.0 { "; Secure" } else { "" };
            let cookie = format!("{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{secure}");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Ok(Principal::Agent { name, .. }) => {
            audit(&access, "ui.login", format!("agent:{name}"), "denied").await;
            refused(
                StatusCode::UNAUTHORIZED,
                "this is an agent's token: sign in with an operator token (certkeeper token create)",
            )
        }
        Err(rejection) => {
            let event = failed("anonymous".to_owned(), "unknown, expired or revoked token");
            if let Err(error) = access.auth_failed(peer, event).await {
                tracing::error!(%error, "could not write an audit record of a failed sign-in");
            }
            tracing::info!(?rejection, "web UI sign-in refused");
            refused(
                StatusCode::UNAUTHORIZED,
                "this token is not valid (unknown, expired or revoked)",
            )
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    csrf: String,
}

pub(crate) async fn logout(
    State(access): State<Access>,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<LogoutForm>,
) -> Result<Response, WebError> {
    session.check_csrf(&form.csrf)?;
    audit(&access, "ui.logout", session.operator.name.clone(), "success").await;
    let mut response = Redirect::to("/ui/login").into_response();
    let cookie = format!("{SESSION_COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// Records a UI action in the audit trail; a failure to record is logged, not shown.
pub(crate) async fn audit(access: &Access, action: &str, actor: String, outcome: &str) {
    audit_event(access, AuditEvent::new(action, actor, outcome)).await;
}

pub(crate) async fn audit_event(access: &Access, mut event: AuditEvent) {
    event.detail = Some(event.detail.take().unwrap_or_else(|| "web UI".to_owned()));
    if let Err(error) = access.audit(event).await {
        tracing::error!(%error, "could not write an audit record of a web UI action");
    }
}

/// Where to go after sign-in: a path inside the UI only, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if (path == "/ui" || path.starts_with("/ui/") || path.starts_with("/ui?"))
                && !path.starts_with("//")
                && !path.contains("://") =>
        {
            path.to_owned()
        }
        _ => "/ui".to_owned(),
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_stays_inside_the_ui() {
        assert_eq!(safe_next(Some("/ui/certificates?q=a")), "/ui/certificates?q=a");
        assert_eq!(safe_next(Some("https://evil.example/ui/")), "/ui");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui");
        assert_eq!(safe_next(Some("/api/v1/tokens")), "/ui");
        assert_eq!(safe_next(Some("/uievil")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; ck_session=ck_k_s; b=2"));
        assert_eq!(session_token(&headers).as_deref(), Some("ck_k_s"));
        assert_eq!(csrf_of("ck_k_s"), csrf_of("ck_k_s"));
        assert_ne!(csrf_of("ck_k_s"), csrf_of("ck_k_t"));
    }
}
