//! Secret canaries beyond the ACME ones (`acme::secret_canaries_never_leak`): the admin and
//! agent tokens, a webhook signing key, an SMTP password, the EST password and the SCEP
//! challenge go through a server on PostgreSQL with debug logging, notifications that fail to
//! deliver, and refused enrollments. Then every web UI page, every API answer, the log and a
//! dump of the whole database are searched: no canary is anywhere, except the one answer of
//! each token's creation.

use serde_json::json;

use crate::security::{Http, ui_sign_in};
use crate::support::{Server, require_peer};

#[tokio::test(flavor = "multi_thread")]
async fn secret_canaries_stay_out_of_ui_api_logs_and_postgres() {
    if !require_peer("pg_dump", "postgresql-client-15") {
        return;
    }
    let Some(database) = crate::cluster::fresh_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let closed = ck_test_peers::free_port();
    let canaries = [
        ("webhook signing key", "WEBHOOK-CANARY-5c1d0e9a7b3f"),
        ("SMTP password", "SMTP-CANARY-8e2a61f0c4d7"),
        ("EST password", "EST-CANARY-0f9b7c2e41a6"),
        ("SCEP challenge", "SCEP-CANARY-d4a83b6e20c9"),
    ];
    for (file, (_, canary)) in ["webhook.key", "smtp.pw", "est.secret", "scep.secret"]
        .iter()
        .zip(&canaries)
    {
        std::fs::write(work.join(file), canary).unwrap();
    }
    let path = |file: &str| work.join(file).to_str().unwrap().to_owned();
    std::fs::write(
        work.join("config.yaml"),
        format!(
            "notifications:\n  notifiers:\n    - name: hook\n      type: webhook\n      url: http://127.0.0.1:{closed}/hook\n      secret_file: {}\n    - name: mail\n      type: email\n      host: 127.0.0.1\n      port: {closed}\n      security: none\n      username: certkeeper\n      password_file: {}\n      from: ck@example.test\n      to: [ops@example.test]\nest:\n  username: devices\n  password_file: {}\n  issuer: local\n  allowed_suffixes: [devices.test]\nscep:\n  challenge_file: {}\n  issuer: local\n  allowed_suffixes: [devices.test]\n",
            path("webhook.key"),
            path("smtp.pw"),
            path("est.secret"),
            path("scep.secret"),
        ),
    )
    .unwrap();
    let server = Server::start_logged(
        &work.join("data"),
        &["--database", &database, "--config", &path("config.yaml")],
        "debug",
    );
    let admin = server.token();
    let http = Http::new(&server.url);
    let mut shown = String::new();

    // An agent: its token is in the creation answer only.
    let (status, agent) = http
        .call("POST", "/agents", &admin, Some(json!({"name": "web-1"})))
        .await;
    assert_eq!(status, 201, "{agent}");
    let agent_token = agent["token"].as_str().unwrap().to_owned();
    let (status, _) = http
        .call(
            "POST",
            "/agent/heartbeat",
            &agent_token,
            Some(json!({"hostname": "web-1"})),
        )
        .await;
    assert_eq!(status, 200);
    // Events for the notifiers, which fail to deliver (closed port) and log why.
    let (status, cert) = http
        .call(
            "POST",
            "/certificates?wait=30",
            &admin,
            Some(json!({"common_name": "canary.internal"})),
        )
        .await;
    assert_eq!(status, 201, "{cert}");
    let id = cert["id"].as_str().unwrap().to_owned();
    shown.push_str(&cert.to_string());
    let (_, revoked) = http
        .call(
            "POST",
            &format!("/certificates/{id}/revoke"),
            &admin,
            Some(json!({"reason": "superseded"})),
        )
        .await;
    shown.push_str(&revoked.to_string());
    // Refused enrollments: a wrong EST password, a SCEP GetCACaps.
    let raw = http
        .raw("POST", "/.well-known/est/simpleenroll")
        .basic_auth("devices", Some("wrong-password-123"))
        .header("content-type", "application/pkcs10")
        .body("MIIB")
        .send()
        .await
        .unwrap();
    shown.push_str(&raw.text().await.unwrap());
    let raw = http.raw("GET", "/scep?operation=GetCACaps").send().await.unwrap();
    shown.push_str(&raw.text().await.unwrap());
    // Let the delivery loop try and fail at least once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, page) = http.call("GET", "/notifications", &admin, None).await;
        let tried = page["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|n| n["attempts"].as_u64().unwrap_or(0) > 0));
        if tried {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no delivery attempt: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    for path in [
        "/issuers",
        "/issuers/local",
        "/agents",
        "/tokens",
        "/notifications",
        "/audit?limit=10000",
        "/cluster",
        "/jobs",
        "/token",
    ] {
        let (status, body) = http.call("GET", path, &admin, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        shown.push_str(&body.to_string());
    }
    let (_, body) = http.call("GET", "/agent/work", &agent_token, None).await;
    shown.push_str(&body.to_string());
    let session = ui_sign_in(&server.url, &admin).await;
    for page in [
        "/ui".to_owned(),
        "/ui/certificates".to_owned(),
        format!("/ui/certificates/{id}"),
        "/ui/issuers".to_owned(),
        "/ui/agents".to_owned(),
        "/ui/jobs".to_owned(),
        "/ui/tokens".to_owned(),
        "/ui/audit".to_owned(),
        "/ui/audit?format=csv".to_owned(),
        "/ui/notifications".to_owned(),
    ] {
        let (status, body) = session.get(&page).await;
        assert_eq!(status, 200, "{page}");
        shown.push_str(&body);
    }
    assert!(server.log_text().contains("DEBUG"), "debug logging was on");
    shown.push_str(&server.log_text());
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--inserts", &database])
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    // The control: the dump holds the issued certificate, so the search sees real rows.
    assert!(dump.contains("canary.internal"), "the dump has the inventory");

    let mut all = canaries
        .iter()
        .map(|(what, canary)| (*what, (*canary).to_owned()))
        .collect::<Vec<_>>();
    all.push(("admin token", admin.clone()));
    all.push(("agent token", agent_token.clone()));
    // A token's secret part alone must not appear either.
    // `ck_` + 16 hex digits + `_`, then the secret (base64url, which may hold `_` itself).
    all.push(("agent token secret", agent_token[20..].to_owned()));
    let mut leaks = Vec::new();
    for (what, canary) in &all {
        assert!(canary.len() >= 20, "{what} canary too short to be meaningful");
        if shown.contains(canary.as_str()) {
            leaks.push(format!("{what} in the UI, API answers or the log"));
        }
        if dump.contains(canary.as_str()) {
            leaks.push(format!("{what} in PostgreSQL"));
        }
    }
    assert!(leaks.is_empty(), "leaks: {leaks:?}");
    eprintln!(
        "canaries: {} values against {} bytes of UI pages, answers and log and {} bytes of PostgreSQL dump",
        all.len(),
        shown.len(),
        dump.len()
    );
}
