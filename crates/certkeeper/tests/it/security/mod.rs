//! One named test per finding of the security review (issue 18): each reproduces the attack
//! against the real binary and asserts that it now fails. None may be ignored.
//!
//! The modules follow the trust boundaries of SECURITY.md.

mod access;
mod api;
mod canaries;
mod issuers;
mod listeners;
mod lows;
mod ocsp;
mod scep;
mod web;

use serde_json::Value;

/// Plain API calls with a bearer token, as a script would make them.
pub(crate) struct Http {
    client: reqwest::Client,
    url: String,
}

impl Http {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap(),
            url: url.to_owned(),
        }
    }

    /// `method /api/v1{path}` with `token`; a POST always carries JSON (`{}` without a body).
    pub(crate) async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}/api/v1{path}", self.url))
            .bearer_auth(token);
        if method != "GET" {
            request = request.json(&body.unwrap_or_else(|| serde_json::json!({})));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Makes a token (`body` as for `POST /tokens`) with `admin`; returns its secret.
    pub(crate) async fn token(&self, admin: &str, body: Value) -> String {
        let (status, made) = self.call("POST", "/tokens", admin, Some(body)).await;
        assert_eq!(status, 201, "{made}");
        made["token"].as_str().unwrap().to_owned()
    }

    /// Creates a certificate (`body` as for `POST /certificates`) and waits until it is issued.
    pub(crate) async fn issued(&self, token: &str, body: Value) -> Value {
        let (status, cert) = self.call("POST", "/certificates?wait=30", token, Some(body)).await;
        assert_eq!(status, 201, "{cert}");
        cert
    }

    /// A raw request: the caller sets every header.
    pub(crate) fn raw(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
    }
}

/// A signed-in web UI session (cookie and form token), driven over plain HTTP.
pub(crate) struct UiSession {
    client: reqwest::Client,
    url: String,
    cookie: String,
    pub(crate) csrf: String,
}

/// Fills `request` with an HTML form's body (reqwest's own `form` is a feature this
/// workspace does not build).
pub(crate) fn with_form<K: AsRef<str>, V: AsRef<str>>(
    request: reqwest::RequestBuilder,
    fields: &[(K, V)],
) -> reqwest::RequestBuilder {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k.as_ref()), encode(v.as_ref())))
        .collect();
    request
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.join("&"))
}

/// The value of `name="<field>" value="…"` in a page.
pub(crate) fn form_value(page: &str, field: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{field}\" value=\""))?;
    let rest = &page[at + field.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The `name=value` of a `Set-Cookie` for `name`.
pub(crate) fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// The login form's page and its login-CSRF cookie (`ck_login=…`).
pub(crate) async fn ui_login_form(client: &reqwest::Client, url: &str) -> (String, String) {
    let response = client.get(format!("{url}/ui/login")).send().await.unwrap();
    let cookie = set_cookie(&response, "ck_login").expect("the login form sets its CSRF cookie");
    (response.text().await.unwrap(), cookie)
}

/// The UI's form token for a session of `token` (as ck-web derives it).
fn csrf_of(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("certkeeper-ui-csrf\0{token}").as_bytes(),
    );
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs in to the web UI with `token` through the real login form.
pub(crate) async fn ui_sign_in(url: &str, token: &str) -> UiSession {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (form, login_cookie) = ui_login_form(&client, url).await;
    let login_csrf = form_value(&form, "login_csrf").expect("login_csrf field");
    let response = with_form(
        client
            .post(format!("{url}/ui/login"))
            .header(reqwest::header::COOKIE, &login_cookie),
        &[("token", token), ("next", "/ui"), ("login_csrf", login_csrf.as_str())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 303, "sign-in");
    let cookie = set_cookie(&response, "ck_session").expect("a session cookie");
    let mut session = UiSession {
        client,
        url: url.to_owned(),
        cookie,
        csrf: String::new(),
    };
    // The form token of the session: every page of the layout carries it (in its sign-out
    // form); a token that may read no page at all still has it, derived from the token.
    session.csrf = csrf_of(token);
    for page in ["/ui", "/ui/certificates/new", "/ui/tokens"] {
        let (_, text) = session.get(page).await;
        if let Some(csrf) = form_value(&text, "csrf") {
            assert_eq!(csrf, session.csrf, "the UI's CSRF derivation changed");
            break;
        }
    }
    session
}

impl UiSession {
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Posts a form with this session's CSRF token added.
    pub(crate) async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf", self.csrf.as_str()));
        let response = with_form(
            self.client
                .post(format!("{}{path}", self.url))
                .header(reqwest::header::COOKIE, &self.cookie),
            &form,
        )
        .send()
        .await
        .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}
