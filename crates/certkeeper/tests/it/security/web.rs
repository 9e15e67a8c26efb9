//! Security findings: the web UI's sign-in (finding 11, and the login CSRF and cookie items of
//! finding 14).

use std::time::Duration;

use serde_json::Value;

use crate::security::{Http, form_value, set_cookie, ui_login_form, with_form};
use crate::support::Server;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Finding 11: 30 bad sign-ins through the UI were all answered 401 after the API already
/// answered 429, and each wrote an undeletable audit row. The UI now shares the API's limiter,
/// and failures are recorded as one row per address and minute with a count (the first at
/// once, the rest when the minute is over).
#[tokio::test(flavor = "multi_thread")]
async fn ui_sign_in_is_throttled_with_the_api_and_audited_in_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = no_redirects();
    let (form, cookie) = ui_login_form(&client, &server.url).await;
    let login_csrf = form_value(&form, "login_csrf").unwrap();
    let mut statuses = Vec::new();
    for n in 0..30 {
        let response = with_form(
            client
                .post(format!("{}/ui/login", server.url))
                .header(reqwest::header::COOKIE, &cookie),
            &[
                ("token", format!("ck_0123456789abcdef_guess{n}")),
                ("login_csrf", login_csrf.clone()),
            ],
        )
        .send()
        .await
        .unwrap();
        statuses.push(response.status().as_u16());
    }
    // The burst is 20 (one more may refill meanwhile), then 429.
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert!((20..=21).contains(&refused), "{statuses:?}");
    assert!(statuses[22..].iter().all(|s| *s == 429), "{statuses:?}");
    // The same address is throttled on the API too, even with a valid token.
    let http = Http::new(&server.url);
    let (status, _) = http.call("GET", "/token", &server.token(), None).await;
    assert_eq!(status, 429, "one limiter for every door");

    // The trail holds one row for the first failure now, and one with the count once the
    // minute is over (flushed within 10 s after it). Read from another address.
    let reader = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 9]))
        .build()
        .unwrap();
    let failures = |action: &'static str| {
        let reader = reader.clone();
        let url = server.url.clone();
        let token = server.token();
        async move {
            let page: Value = reader
                .get(format!("{url}/api/v1/audit?action={action}&outcome=denied"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["items"].as_array().unwrap().clone()
        }
    };
    // One row per address and minute (two if the attempts straddled a minute), not 20.
    let first_rows = failures("ui.login").await.len();
    assert!((1..=2).contains(&first_rows), "{first_rows} rows");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let tallies = failures("auth.failure").await;
        let counted: usize = tallies
            .iter()
            .filter_map(|row| row["detail"].as_str())
            .filter_map(|detail| detail.strip_suffix(')').and(detail.split(' ').next()))
            .filter_map(|n| n.parse::<usize>().ok())
            .sum();
        if counted + first_rows == refused {
            assert!(tallies.len() <= 2, "{tallies:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no tally row: {tallies:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Finding 14 (login CSRF): the sign-in form had no CSRF token, so another site could sign a
/// victim's browser in with the attacker's token. A sign-in now needs the form's value and the
/// matching SameSite=Strict cookie set with the form.
#[tokio::test(flavor = "multi_thread")]
async fn ui_sign_in_from_another_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let client = no_redirects();
    let token = server.token();
    // A cross-site form post: no cookie (SameSite=Strict), a guessed or stolen field.
    for login_csrf in ["", "00112233445566778899aabbccddeeff"] {
        let response = with_form(
            client.post(format!("{}/ui/login", server.url)),
            &[("token", token.as_str()), ("login_csrf", login_csrf)],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status().as_u16(), 403);
        assert!(set_cookie(&response, "ck_session").is_none(), "no session");
    }
    // The form's own pair signs in.
    let (form, cookie) = ui_login_form(&client, &server.url).await;
    let response = with_form(
        client
            .post(format!("{}/ui/login", server.url))
            .header(reqwest::header::COOKIE, &cookie),
        &[
            ("token", token.as_str()),
            ("login_csrf", &form_value(&form, "login_csrf").unwrap()),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    assert!(set_cookie(&response, "ck_session").is_some());
}

/// Finding 14 (cookie): behind a TLS-terminating proxy the session cookie lacked `Secure`.
/// A `https://` public URL now sets it.
#[tokio::test(flavor = "multi_thread")]
async fn session_cookie_is_secure_behind_a_tls_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--public-url", "https://ck.example.test"]);
    let client = no_redirects();
    let (form, cookie) = ui_login_form(&client, &server.url).await;
    let response = with_form(
        client
            .post(format!("{}/ui/login", server.url))
            .header(reqwest::header::COOKIE, &cookie),
        &[
            ("token", server.token().as_str()),
            ("login_csrf", &form_value(&form, "login_csrf").unwrap()),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let header = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ck_session="))
        .unwrap()
        .to_owned();
    assert!(header.contains("; Secure"), "{header}");
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
}
