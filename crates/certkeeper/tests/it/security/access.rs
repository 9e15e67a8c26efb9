//! Security findings: who may act on which token, agent, issuer and certificate (findings 1,
//! 3 and 12), through the API and the web UI.

use serde_json::{Value, json};

use crate::security::{Http, ui_sign_in};
use crate::support::{Server, require_peer, sh};

/// Finding 1: an admin-scoped token restricted to team=a rotated the bootstrap admin token
/// (all scopes, no restriction), took its powers and locked the real admin out. Now a token
/// acts only on tokens within its reach (scopes a subset, restriction at least as narrow),
/// sees only those, and server-wide state (audit trail, notifications, issuers' accounts) is
/// for unrestricted tokens.
#[tokio::test(flavor = "multi_thread")]
async fn restricted_admin_cannot_take_over_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let team_admin = http
        .token(
            &admin,
            json!({"name": "team-a-admin", "scopes": ["read", "create", "admin"], "labels": {"team": "a"}}),
        )
        .await;
    // An unrestricted token with the admin scope alone cannot touch a token with more scopes.
    let admin_only = http
        .token(&admin, json!({"name": "admin-only", "scopes": ["admin"]}))
        .await;

    for attacker in [&team_admin, &admin_only] {
        for action in ["rotate", "revoke"] {
            let (status, body) = http
                .call("POST", &format!("/tokens/admin/{action}"), attacker, None)
                .await;
            assert_eq!(status, 404, "{action} the admin token: {body}");
            assert!(body.get("token").is_none(), "no secret handed out: {body}");
        }
    }
    let (status, _) = http.call("GET", "/token", &admin, None).await;
    assert_eq!(status, 200, "the real admin still signs in");

    // The restricted admin sees only the tokens within its reach: itself and what it makes.
    let (status, _) = http
        .call(
            "POST",
            "/tokens",
            &team_admin,
            Some(json!({"name": "team-a-ci", "scopes": ["read", "create"]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, listed) = http.call("GET", "/tokens", &team_admin, None).await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["team-a-admin", "team-a-ci"]);
    // ... and may revoke what it reaches.
    let (status, _) = http.call("POST", "/tokens/team-a-ci/rotate", &team_admin, None).await;
    assert_eq!(status, 200);

    // Server-wide state is out of its reach.
    for (method, path) in [
        ("GET", "/audit"),
        ("GET", "/notifications"),
        ("POST", "/issuers/local/account/deactivate"),
        ("POST", "/issuers/local/account/rollover"),
    ] {
        let (status, body) = http.call(method, path, &team_admin, None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
}

/// Finding 1, web UI: the Revoke button of the tokens page had the same gap.
#[tokio::test(flavor = "multi_thread")]
async fn ui_token_revoke_respects_the_callers_reach() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let team_admin = http
        .token(
            &admin,
            json!({"name": "team-a-admin", "scopes": ["read", "admin"], "labels": {"team": "a"}}),
        )
        .await;
    let session = ui_sign_in(&server.url, &team_admin).await;
    let (status, page) = session.get("/ui/tokens").await;
    assert_eq!(status, 200);
    assert!(
        !page.contains(">admin<"),
        "the admin token is not listed to a restricted admin"
    );
    let (status, _) = session.post_form("/ui/tokens/admin/revoke", &[]).await;
    assert_eq!(status, 404);
    let (status, _) = http.call("GET", "/token", &admin, None).await;
    assert_eq!(status, 200, "the admin token still works");
    // Server-wide pages are refused, not just hidden.
    for page in ["/ui/audit", "/ui/notifications"] {
        let (status, _) = session.get(page).await;
        assert_eq!(status, 403, "{page}");
    }
}

/// Finding 5: a create-only token (403 on GET /api/v1/certificates) saw the whole inventory,
/// chains and job queue in /ui. Every UI page now needs the scope the API needs for the same
/// data.
#[tokio::test(flavor = "multi_thread")]
async fn ui_pages_need_the_apis_read_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let cert = http.issued(&admin, json!({"common_name": "inventory.internal"})).await;
    let id = cert["id"].as_str().unwrap();
    let creator = http
        .token(&admin, json!({"name": "creator", "scopes": ["create"]}))
        .await;
    let creator = ui_sign_in(&server.url, &creator).await;
    let reader = http.token(&admin, json!({"name": "reader", "scopes": ["read"]})).await;
    let reader = ui_sign_in(&server.url, &reader).await;
    let pages = [
        "/ui".to_owned(),
        "/ui/certificates".to_owned(),
        format!("/ui/certificates/{id}"),
        format!("/ui/certificates/{id}/chain.pem"),
        "/ui/jobs".to_owned(),
        "/ui/issuers".to_owned(),
        "/ui/agents".to_owned(),
    ];
    for page in &pages {
        let (status, body) = creator.get(page).await;
        assert_eq!(status, 403, "{page} as a create-only token");
        assert!(!body.contains("inventory.internal"), "{page} leaks the inventory");
        assert!(!body.contains("BEGIN CERTIFICATE"), "{page} leaks a chain");
        let (status, _) = reader.get(page).await;
        assert_eq!(status, 200, "{page} as a read token");
    }
    // The form that the create scope is for still works.
    let (status, _) = creator.get("/ui/certificates/new").await;
    assert_eq!(status, 200);
}

/// Finding 3: every leaf carried clientAuth, its subject was the requester's choice, and mTLS
/// mapped a certificate to a token by subject alone without a revocation check: a create-only
/// token got a certificate with an admin-mapped subject and signed in as admin, and revoking
/// it changed nothing. Now leaves are serverAuth unless they ask, tokens are bound to one
/// certificate by fingerprint, and a revoked certificate is refused at once.
#[test]
fn client_certificate_impersonation_and_revocation() {
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("config.yaml"), "tls:\n  auto_names: [127.0.0.1, localhost]\n").unwrap();
    let server = Server::start(
        &work.join("data"),
        &["--config", work.join("config.yaml").to_str().unwrap()],
    );
    std::fs::copy(work.join("data/ca.pem"), work.join("ca.pem")).unwrap();
    let issue = |name: &str, file: &str, extra: &[&str]| {
        let mut args = vec!["cert", "create", name, "--wait", "--json"];
        args.extend_from_slice(extra);
        let created: Value = serde_json::from_str(&server.cli_ok(&args)).unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        std::fs::write(
            work.join(format!("{file}.pem")),
            server.cli_ok(&["cert", "get", &id, "--pem"]),
        )
        .unwrap();
        std::fs::write(
            work.join(format!("{file}.key")),
            server.cli_ok(&["cert", "get", &id, "--key"]),
        )
        .unwrap();
        id
    };
    // The admin's bot certificate, bound to an admin-scoped token by fingerprint.
    let bot = issue("admin-bot.internal", "bot", &["--client-auth"]);
    server.cli_ok(&[
        "token",
        "create",
        "--name",
        "admin-bot",
        "--scope",
        "read,admin",
        "--client-cert",
        work.join("bot.pem").to_str().unwrap(),
    ]);
    // The attacker: the same subject, asked for with clientAuth, through a create-only token.
    let creator = server
        .cli_ok(&[
            "token",
            "create",
            "--name",
            "creator",
            "--scope",
            "create,read,export-key",
        ])
        .lines()
        .find_map(|line| line.split_whitespace().find(|word| word.starts_with("ck_")))
        .unwrap()
        .to_owned();
    let forged: Value = serde_json::from_str(&server.cli_ok(&[
        "cert",
        "create",
        "admin-bot.internal",
        "--client-auth",
        "--wait",
        "--json",
        "--token",
        &creator,
    ]))
    .unwrap();
    let forged_id = forged["id"].as_str().unwrap();
    std::fs::write(
        work.join("forged.pem"),
        server.cli_ok(&["cert", "get", forged_id, "--pem"]),
    )
    .unwrap();
    std::fs::write(
        work.join("forged.key"),
        server.cli_ok(&["cert", "get", forged_id, "--key"]),
    )
    .unwrap();
    // A leaf that did not ask for clientAuth cannot even complete the handshake as a client.
    issue("plain.internal", "plain", &[]);
    let (ok, text) = sh("openssl x509 -in plain.pem -noout -ext extendedKeyUsage", work);
    assert!(ok && text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        !text.contains("Client Authentication"),
        "serverAuth only by default: {text}"
    );

    let whoami = |cert: &str| -> String {
        sh(
            &format!(
                "curl -sS --cacert ca.pem --cert {cert}.pem --key {cert}.key -o out.json -w '%{{http_code}}' {}/api/v1/token",
                server.url
            ),
            work,
        )
        .1
    };
    assert_eq!(whoami("bot"), "200", "the bound certificate signs in");
    assert_eq!(whoami("forged"), "401", "the same subject is not the same certificate");
    assert!(whoami("plain").starts_with("000"), "no clientAuth, no client handshake");
    // Revoking the bound certificate ends its sign-in at once.
    server.cli_ok(&["cert", "revoke", &bot, "--reason", "keyCompromise"]);
    assert_eq!(whoami("bot"), "401", "a revoked client certificate is refused");
}

/// One call of the UI matrix: method, path, form fields, expected status.
type UiCase = (&'static str, String, Vec<(&'static str, &'static str)>, u16);

/// The authorization matrix of the web UI: every page and form × callers of each scope, a
/// team's token and a team's admin. Each answer must be what the API gives for the same data
/// (findings 1 and 5): the scope the API needs, 404 out of reach, 403 for server-wide pages to
/// a restricted token.
#[tokio::test(flavor = "multi_thread")]
async fn ui_authorization_matrix_matches_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token-rate-limit", "0"]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let certificate = |team: &'static str| {
        let (http, admin) = (&http, &admin);
        async move {
            let name = format!("ui-{}.team-{team}.internal", rand_suffix());
            let cert = http
                .issued(admin, json!({"common_name": name, "labels": {"team": team}}))
                .await;
            cert["id"].as_str().unwrap().to_owned()
        }
    };
    let mut callers: Vec<(String, Vec<&str>, bool)> = Vec::new();
    for scope in ["read", "create", "update", "delete", "admin", "export-key"] {
        callers.push((scope.to_owned(), vec![scope], false));
    }
    callers.push((
        "team-a".to_owned(),
        vec!["read", "create", "update", "delete", "export-key"],
        true,
    ));
    callers.push((
        "team-a-admin".to_owned(),
        vec!["read", "create", "update", "delete", "export-key", "admin"],
        true,
    ));
    let mut failures = Vec::new();
    let mut calls = 0;
    for (name, scopes, restricted) in &callers {
        let mut body = json!({"name": format!("ui-{name}"), "scopes": scopes});
        if *restricted {
            body["labels"] = json!({"team": "a"});
        }
        let session = ui_sign_in(&server.url, &http.token(&admin, body).await).await;
        let has = |scope: &str| scopes.contains(&scope);
        let own = certificate("a").await;
        let other = certificate("b").await;
        // (method, path, form fields, expected)
        let scoped = |scope: &str, ok: u16| if has(scope) { ok } else { 403 };
        let out_of_reach = |scope: &str, ok: u16| match (has(scope), restricted) {
            (false, _) => 403,
            (true, true) => 404,
            (true, false) => ok,
        };
        let server_wide = |ok: u16| match (has("admin"), restricted) {
            (false, _) | (true, true) => 403,
            (true, false) => ok,
        };
        let cases: Vec<UiCase> = vec![
            ("GET", "/ui".into(), vec![], scoped("read", 200)),
            ("GET", "/ui/certificates".into(), vec![], scoped("read", 200)),
            ("GET", "/ui/certificates/new".into(), vec![], scoped("create", 200)),
            ("GET", format!("/ui/certificates/{own}"), vec![], scoped("read", 200)),
            (
                "GET",
                format!("/ui/certificates/{other}"),
                vec![],
                out_of_reach("read", 200),
            ),
            (
                "GET",
                format!("/ui/certificates/{own}/chain.pem"),
                vec![],
                scoped("read", 200),
            ),
            (
                "GET",
                format!("/ui/certificates/{other}/chain.pem"),
                vec![],
                out_of_reach("read", 200),
            ),
            ("GET", "/ui/issuers".into(), vec![], scoped("read", 200)),
            ("GET", "/ui/agents".into(), vec![], scoped("read", 200)),
            (
                "GET",
                "/ui/jobs".into(),
                vec![],
                if *restricted { 403 } else { scoped("read", 200) },
            ),
            ("GET", "/ui/tokens".into(), vec![], scoped("admin", 200)),
            ("GET", "/ui/audit".into(), vec![], server_wide(200)),
            ("GET", "/ui/notifications".into(), vec![], server_wide(200)),
            (
                "POST",
                format!("/ui/certificates/{own}/renew"),
                vec![],
                scoped("update", 303),
            ),
            (
                "POST",
                format!("/ui/certificates/{other}/renew"),
                vec![],
                out_of_reach("update", 303),
            ),
            (
                "POST",
                format!("/ui/certificates/{other}/revoke"),
                vec![("reason", "superseded")],
                out_of_reach("delete", 303),
            ),
            (
                "POST",
                format!("/ui/certificates/{own}/export.p12"),
                vec![("password", "correct horse battery")],
                scoped("export-key", 200),
            ),
            (
                "POST",
                "/ui/tokens/admin/revoke".into(),
                vec![],
                // Only an unrestricted token with every scope reaches the bootstrap admin
                // token; this matrix has none, so it is out of reach for every admin here.
                scoped("admin", 404),
            ),
            (
                "POST",
                "/ui/notifications/0190f0aa-0000-7000-8000-000000000000/requeue".into(),
                vec![],
                server_wide(404),
            ),
        ];
        for (method, path, fields, expected) in cases {
            let (status, page) = if method == "GET" {
                session.get(&path).await
            } else {
                session.post_form(&path, &fields).await
            };
            calls += 1;
            if status != expected {
                failures.push(format!(
                    "{method} {path} as {name}: expected {expected}, got {status}: {}",
                    page.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("UI authorization matrix: {calls} calls, all as the API answers");
}

fn rand_suffix() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

// --- agents (finding 12, and the agent part of finding 1) ---

/// Registers an agent as the bootstrap admin through the CLI (`agents add NAME --label k=v`);
/// returns its id and token.
fn cli_agent(server: &Server, name: &str, labels: &[&str]) -> (String, String) {
    let mut args = vec!["agents", "add", name, "--json"];
    for label in labels {
        args.extend(["--label", label]);
    }
    let created: Value = serde_json::from_str(&server.cli_ok(&args)).unwrap();
    let expected: serde_json::Map<String, Value> = labels
        .iter()
        .map(|l| l.split_once('=').unwrap())
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    assert_eq!(created["agent"]["labels"], Value::Object(expected), "{created}");
    (
        created["agent"]["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

/// An operator token with `scopes`, restricted to team=`team`.
async fn team_token(http: &Http, admin: &str, name: &str, scopes: &[&str], team: &str) -> String {
    http.token(admin, json!({"name": name, "scopes": scopes, "labels": {"team": team}}))
        .await
}

/// The names of the certificates in an agent's work list.
async fn work_list(http: &Http, agent_token: &str) -> Vec<String> {
    let (status, work) = http.call("GET", "/agent/work", agent_token, None).await;
    assert_eq!(status, 200, "{work}");
    work["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Finding 12: a create-only token restricted to team=a bound a certificate to team b's
/// agent, which then found it in its work list (and would deploy it). Binding now needs the
/// agent to lie within the caller's restriction; any other agent is "not found", worded
/// exactly like one that does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn create_token_cannot_bind_certificate_to_foreign_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let (b_id, b_token) = cli_agent(&server, "team-b-host", &["team=b"]);
    let (_, a_token) = cli_agent(&server, "team-a-host", &["team=a", "env=prod"]);
    let creator = team_token(&http, &admin, "team-a-create", &["create"], "a").await;

    for agent in ["team-b-host", b_id.as_str()] {
        let body = json!({"common_name": "app.team-a.internal", "agent": agent});
        let (status, answer) = http.call("POST", "/certificates", &creator, Some(body)).await;
        assert_eq!(status, 404, "bind to team b's agent {agent}: {answer}");
        assert_eq!(
            answer["detail"],
            json!(format!("agent '{agent}' not found")),
            "{answer}"
        );
    }
    // An agent that does not exist gets the same answer: the refusal reveals nothing.
    let body = json!({"common_name": "app.team-a.internal", "agent": "no-such-host"});
    let (status, answer) = http.call("POST", "/certificates", &creator, Some(body)).await;
    assert_eq!(
        (status, &answer["detail"]),
        (404, &json!("agent 'no-such-host' not found"))
    );
    assert!(
        work_list(&http, &b_token).await.is_empty(),
        "team b's work list stays empty"
    );

    // Its own team's agent (labels team=a plus more) takes the certificate.
    let body = json!({"common_name": "own.team-a.internal", "agent": "team-a-host"});
    let (status, answer) = http.call("POST", "/certificates", &creator, Some(body)).await;
    assert!(
        status == 201 || status == 202,
        "bind to team a's agent: {status} {answer}"
    );
    assert_eq!(work_list(&http, &a_token).await, ["own.team-a.internal"]);
    // The unrestricted admin binds to any agent.
    let body = json!({"common_name": "ops.team-b.internal", "agent": "team-b-host", "labels": {"team": "b"}});
    let (status, answer) = http.call("POST", "/certificates", &admin, Some(body)).await;
    assert!(status == 201 || status == 202, "admin binds: {status} {answer}");
    assert_eq!(work_list(&http, &b_token).await, ["ops.team-b.internal"]);
}

/// Finding 1 (agents): an admin-scoped token restricted to team=a could revoke every agent,
/// locking out other teams' hosts. It now reaches only agents carrying its labels (others are
/// "not found"), and the agents it registers get its labels (a contradicting label is refused).
#[tokio::test(flavor = "multi_thread")]
async fn restricted_admin_cannot_revoke_foreign_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    let (b_id, b_token) = cli_agent(&server, "team-b-host", &["team=b"]);
    let (_, bare_token) = cli_agent(&server, "unlabelled-host", &[]);
    let team_admin = team_token(&http, &admin, "team-a-admin", &["read", "admin"], "a").await;

    for target in ["team-b-host", b_id.as_str(), "unlabelled-host"] {
        let (status, answer) = http
            .call("POST", &format!("/agents/{target}/revoke"), &team_admin, None)
            .await;
        assert_eq!(status, 404, "revoke {target}: {answer}");
    }
    for token in [&b_token, &bare_token] {
        let (status, answer) = http
            .call(
                "POST",
                "/agent/heartbeat",
                token,
                Some(json!({"hostname": "still-here"})),
            )
            .await;
        assert_eq!(status, 200, "the agent still works: {answer}");
    }

    // What it registers carries its labels, so it can manage (and revoke) it.
    let (status, answer) = http
        .call(
            "POST",
            "/agents",
            &team_admin,
            Some(json!({"name": "sneaky-host", "labels": {"team": "b"}})),
        )
        .await;
    assert_eq!(status, 403, "a label outside its restriction: {answer}");
    let (status, made) = http
        .call(
            "POST",
            "/agents",
            &team_admin,
            Some(json!({"name": "team-a-host", "labels": {"env": "prod"}})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["agent"]["labels"], json!({"env": "prod", "team": "a"}));
    let (status, revoked) = http.call("POST", "/agents/team-a-host/revoke", &team_admin, None).await;
    assert_eq!((status, &revoked["status"]), (200, &json!("revoked")), "{revoked}");
    // The unrestricted admin still reaches every agent.
    let (status, revoked) = http.call("POST", "/agents/team-b-host/revoke", &admin, None).await;
    assert_eq!(status, 200, "{revoked}");
}

/// Finding 1 (agents): a restricted token listed every team's agents (names, hosts, OS,
/// versions) in the API and the web UI. Both now list only the agents within its restriction.
#[tokio::test(flavor = "multi_thread")]
async fn restricted_admin_lists_only_its_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = Http::new(&server.url);
    let admin = server.token();
    cli_agent(&server, "team-a-host", &["team=a"]);
    cli_agent(&server, "team-b-host", &["team=b"]);
    cli_agent(&server, "unlabelled-host", &[]);
    let team_admin = team_token(&http, &admin, "team-a-admin", &["read", "admin"], "a").await;

    let names = |listed: &Value| -> Vec<String> {
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, listed) = http.call("GET", "/agents", &team_admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(names(&listed), ["team-a-host"]);
    assert_eq!(listed[0]["labels"], json!({"team": "a"}));
    let (_, listed) = http.call("GET", "/agents", &admin, None).await;
    assert_eq!(names(&listed), ["team-a-host", "team-b-host", "unlabelled-host"]);

    // The CLI with the restricted token shows the same.
    let table = server.cli_ok(&["agents", "list", "--url", &server.url, "--token", &team_admin]);
    assert!(table.contains("team-a-host") && table.contains("team=a"), "{table}");
    assert!(
        !table.contains("team-b-host") && !table.contains("unlabelled-host"),
        "{table}"
    );

    // The web UI's agents page too.
    let session = ui_sign_in(&server.url, &team_admin).await;
    let (status, page) = session.get("/ui/agents").await;
    assert_eq!(status, 200);
    assert!(page.contains("team-a-host"), "{page}");
    assert!(
        !page.contains("team-b-host") && !page.contains("unlabelled-host"),
        "{page}"
    );
}
