//! Security findings: the API's own edges (findings 10 and 13).

use serde_json::json;

use crate::security::Http;
use crate::support::Server;

/// One cross-site attempt: method, path, headers, body, expected status.
type Attempt = (&'static str, String, Vec<(&'static str, String)>, &'static str, u16);

/// Finding 10: body-less POSTs (revoke, rotate, renew, requeue, deactivate) accepted any
/// Content-Type and no Origin check, so a page on another site could make a browser holding a
/// client certificate revoke a token. State-changing calls now need JSON and a same-origin or
/// absent Origin / Sec-Fetch-Site.
#[tokio::test(flavor = "multi_thread")]
async fn cross_site_requests_cannot_change_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let cert = http.issued(&admin, json!({"common_name": "victim.internal"})).await;
    let id = cert["id"].as_str().unwrap().to_owned();
    let victim = http.token(&admin, json!({"name": "victim", "scopes": ["read"]})).await;
    let host = server.url.trim_start_matches("http://").to_owned();

    // What an HTML form or fetch(no-cors) on another site can send without a preflight.
    let attempts: Vec<Attempt> = vec![
        ("POST", "/api/v1/tokens/victim/revoke".into(), vec![], "", 415),
        (
            "POST",
            "/api/v1/tokens/victim/rotate".into(),
            vec![("content-type", "text/plain".into())],
            "{}",
            415,
        ),
        (
            "POST",
            format!("/api/v1/certificates/{id}/revoke"),
            vec![("content-type", "application/x-www-form-urlencoded".into())],
            "reason=keyCompromise",
            415,
        ),
        (
            "POST",
            format!("/api/v1/certificates/{id}/renew"),
            vec![
                ("content-type", "application/json".into()),
                ("origin", "https://evil.example".into()),
            ],
            "{}",
            403,
        ),
        (
            "POST",
            "/api/v1/tokens/victim/revoke".into(),
            vec![
                ("content-type", "application/json".into()),
                ("sec-fetch-site", "cross-site".into()),
            ],
            "",
            403,
        ),
        (
            "POST",
            "/api/v1/tokens/victim/revoke".into(),
            vec![("content-type", "application/json".into()), ("origin", "null".into())],
            "",
            403,
        ),
    ];
    for (method, path, headers, body, expected) in attempts {
        let mut request = http.raw(method, &path).bearer_auth(&admin).body(body.to_owned());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let problem = response.text().await.unwrap();
        assert_eq!(status, expected, "{method} {path} {headers:?}: {problem}");
        assert!(problem.contains("\"status\""), "a problem document: {problem}");
    }
    let (status, _) = http.call("GET", "/token", &victim, None).await;
    assert_eq!(status, 200, "the victim token survived");
    let (status, cert) = http.call("GET", &format!("/certificates/{id}"), &admin, None).await;
    assert_eq!((status, cert["status"].as_str()), (200, Some("active")));

    // Tools and our own pages pass: JSON with no body, a same-origin Origin.
    let response = http
        .raw("POST", "/api/v1/tokens/victim/rotate")
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

/// Finding 13: `?wait=1e30` panicked the handler (`Duration::from_secs_f64` before the bound).
#[tokio::test(flavor = "multi_thread")]
async fn huge_wait_parameter_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_logged(&dir.path().join("data"), &[], "info");
    let http = Http::new(&server.url);
    let admin = server.token();
    for (wait, expected) in [("1e30", 201), ("1e308", 201), ("inf", 400), ("NaN", 400), ("-1", 400)] {
        let (status, body) = http
            .call(
                "POST",
                &format!("/certificates?wait={wait}"),
                &admin,
                Some(json!({"common_name": format!("w{}.internal", wait.len())})),
            )
            .await;
        assert_eq!(status, expected, "wait={wait}: {body}");
    }
    let (status, _) = http.call("GET", "/token", &admin, None).await;
    assert_eq!(status, 200, "the server is alive");
    assert!(!server.log_text().contains("panicked"), "{}", server.log_text());
}
