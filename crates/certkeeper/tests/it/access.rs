//! Access control end to end: the authorization matrix over every API route, the audit trail
//! of every kind of action, and the rate limits.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use crate::support::Server;

/// One route of the API, with the scope it needs and the status a permitted call gets here.
struct Route {
    method: &'static str,
    path: &'static str,
    /// `None`: any valid token.
    scope: Option<&'static str>,
    ok: u16,
}

const fn route(method: &'static str, path: &'static str, scope: Option<&'static str>, ok: u16) -> Route {
    Route {
        method,
        path,
        scope,
        ok,
    }
}

/// Every route of `/api/v1`. The test fails when the server's OpenAPI document lists a route
/// that is missing here (or the other way round).
const ROUTES: &[Route] = &[
    route("POST", "/certificates", Some("create"), 202),
    route("GET", "/certificates", Some("read"), 200),
    route("GET", "/certificates/{id}", Some("read"), 200),
    // The certificate is valid: the deletion gets past the gate to the 409 that asks for
    // revoke=true or keep_valid=true.
    route("DELETE", "/certificates/{id}", Some("delete"), 409),
    route("GET", "/certificates/{id}/pem", Some("read"), 200),
    route("GET", "/certificates/{id}/key", Some("export-key"), 200),
    route("GET", "/certificates/{id}/export", Some("export-key"), 200),
    route("POST", "/certificates/{id}/renew", Some("update"), 202),
    route("POST", "/certificates/{id}/revoke", Some("delete"), 200),
    route("GET", "/certificates/{id}/versions", Some("read"), 200),
    route("GET", "/issuers", Some("read"), 200),
    // The body asks for a second local CA: the admin gets past the gate to the 400.
    route("POST", "/issuers", Some("admin"), 400),
    route("GET", "/issuers/{id}", Some("read"), 200),
    // The local CA has no ACME account: the admin gets past the gate to the 409.
    route("POST", "/issuers/{id}/account/rollover", Some("admin"), 409),
    route("POST", "/issuers/{id}/account/deactivate", Some("admin"), 409),
    route("GET", "/issuers/{id}/ca.pem", Some("read"), 200),
    route("GET", "/agents", Some("read"), 200),
    route("POST", "/agents", Some("admin"), 201),
    route("POST", "/agents/{id}/revoke", Some("admin"), 200),
    route("POST", "/agent/heartbeat", Some("agent"), 200),
    route("GET", "/agent/work", Some("agent"), 200),
    // A garbage CSR: the agent gets past the gate to the 400.
    route("POST", "/agent/certificates/{id}/csr", Some("agent"), 400),
    route("GET", "/agent/certificates/{id}/bundle", Some("agent"), 200),
    route("POST", "/agent/certificates/{id}/deployments", Some("agent"), 201),
    route("GET", "/jobs", Some("read"), 200),
    route("GET", "/jobs/{id}", Some("read"), 200),
    // The job has succeeded: the cancel gets past the gate to the 409.
    route("POST", "/jobs/{id}/cancel", Some("update"), 409),
    route("GET", "/tokens", Some("admin"), 200),
    route("POST", "/tokens", Some("admin"), 201),
    route("POST", "/tokens/{id}/revoke", Some("admin"), 200),
    route("POST", "/tokens/{id}/rotate", Some("admin"), 200),
    route("GET", "/token", None, 200),
    route("GET", "/audit", Some("admin"), 200),
    route("GET", "/cluster", Some("read"), 200),
    route("GET", "/notifications", Some("admin"), 200),
    // This server has no notifiers, so there is no notification: the admin gets past the gate
    // to the 404 (the notification tests cover the found case).
    route("GET", "/notifications/{id}", Some("admin"), 404),
    route("POST", "/notifications/{id}/requeue", Some("admin"), 404),
];

/// The routes only a token without a restriction may call, whatever its scopes.
const SERVER_WIDE: &[(&str, &str)] = &[
    ("POST", "/issuers"),
    ("POST", "/issuers/{id}/account/rollover"),
    ("POST", "/issuers/{id}/account/deactivate"),
    ("GET", "/audit"),
    ("GET", "/notifications"),
    ("GET", "/notifications/{id}"),
    ("POST", "/notifications/{id}/requeue"),
];

/// Who calls.
#[derive(Debug)]
struct Caller {
    label: &'static str,
    token: Option<String>,
    /// `None`: not a valid token at all.
    scopes: Option<Vec<&'static str>>,
    /// Restricted to team=a; `other_team` aims it at team b's certificates.
    restricted: bool,
    other_team: bool,
}

impl Caller {
    fn expected(&self, route: &Route) -> u16 {
        let Some(scopes) = &self.scopes else {
            return 401;
        };
        if let Some(scope) = route.scope
            && !scopes.contains(&scope)
        {
            return 403;
        }
        if self.restricted {
            if route.method == "GET" && route.path == "/jobs" {
                return 403; // a restricted token lists one certificate's jobs at a time
            }
            if SERVER_WIDE.contains(&(route.method, route.path)) {
                return 403; // state every team shares
            }
            if matches!(
                route.path,
                "/tokens/{id}/revoke" | "/tokens/{id}/rotate" | "/agents/{id}/revoke"
            ) {
                return 404; // the victim (unrestricted, unlabelled) is out of its reach
            }
            if self.other_team {
                if route.path == "/certificates" && route.method == "POST" {
                    return 403; // asks for team=b
                }
                if route.path.starts_with("/certificates/{id}") || route.path.starts_with("/jobs/{id}") {
                    return 404; // out of reach looks like absent
                }
            }
        }
        route.ok
    }
}

struct Matrix {
    http: reqwest::Client,
    url: String,
    admin: String,
    agent_name: String,
    serial: std::sync::atomic::AtomicUsize,
}

impl Matrix {
    fn next(&self) -> usize {
        self.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn call(
        &self,
        http: &reqwest::Client,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = http.request(method.parse().unwrap(), format!("{}/api/v1{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        // A state-changing call is JSON even without a body (finding 10 of the security review).
        match body {
            Some(body) => request = request.json(&body),
            None if method != "GET" && method != "DELETE" => request = request.json(&json!({})),
            None => {}
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(&self.http, method, path, Some(&self.admin), body).await;
        assert!(status < 300, "setup {method} {path}: {status} {body}");
        body
    }

    /// An issued certificate of `team` (with a server-made key), optionally bound to the agent.
    async fn certificate(&self, team: &str, agent: bool) -> Value {
        let n = self.next();
        let mut body = json!({"common_name": format!("c{n}.team-{team}.internal"), "labels": {"team": team}});
        if agent {
            body["agent"] = json!(self.agent_name);
            body["key_source"] = json!("server");
        }
        let created = self.admin("POST", "/certificates?wait=30", Some(body)).await;
        assert_eq!(created["status"], "active", "{created}");
        created
    }

    /// The concrete path and body for one call of `route` by `caller`, with fresh resources
    /// for calls that consume them.
    async fn prepare(&self, route: &Route, caller: &Caller) -> (String, Option<Value>) {
        let team = if caller.other_team { "b" } else { "a" };
        let n = self.next();
        let template = route.path;
        let with_id = |id: &str| template.replace("{id}", id);
        match (route.method, template) {
            ("POST", "/certificates") => (
                template.to_owned(),
                Some(json!({"common_name": format!("new{n}.team-{team}.internal"), "labels": {"team": team}})),
            ),
            ("POST", "/issuers") => (
                template.to_owned(),
                Some(json!({"id": format!("second-{n}"), "kind": "local", "acme": {}})),
            ),
            (_, t) if t.starts_with("/issuers/{id}") => (with_id("local"), None),
            ("POST", "/agents") => (template.to_owned(), Some(json!({"name": format!("host-{n}")}))),
            ("POST", "/agents/{id}/revoke") => {
                let victim = self
                    .admin("POST", "/agents", Some(json!({"name": format!("victim-host-{n}")})))
                    .await;
                (with_id(victim["agent"]["id"].as_str().unwrap()), None)
            }
            ("POST", "/agent/heartbeat") => (template.to_owned(), Some(json!({"hostname": "matrix"}))),
            ("POST", "/agent/certificates/{id}/csr") => {
                // The agent makes this one's key: its job waits for a CSR.
                let body = json!({"common_name": format!("k{n}.team-{team}.internal"), "agent": self.agent_name});
                let cert = self.admin("POST", "/certificates", Some(body)).await;
                (with_id(cert["id"].as_str().unwrap()), Some(json!({"csr": "not a CSR"})))
            }
            ("POST", "/agent/certificates/{id}/deployments") => {
                let cert = self.certificate(team, true).await;
                let report = json!({"version": 1, "fingerprint": cert["fingerprint"], "targets": ["files"]});
                (with_id(cert["id"].as_str().unwrap()), Some(report))
            }
            (_, "/agent/certificates/{id}/bundle") => {
                let cert = self.certificate(team, true).await;
                (with_id(cert["id"].as_str().unwrap()), None)
            }
            (_, t) if t.starts_with("/jobs/{id}") => {
                let cert = self.certificate(team, false).await;
                (with_id(cert["job"]["id"].as_str().unwrap()), None)
            }
            ("GET", "/jobs") => (template.to_owned(), None),
            (_, t) if t.starts_with("/notifications/{id}") => (with_id("0190f0aa-0000-7000-8000-000000000000"), None),
            (_, t) if t.starts_with("/certificates/{id}") => {
                let cert = self.certificate(team, false).await;
                let body = (route.method == "POST" && t.ends_with("/revoke")).then(|| json!({"reason": "superseded"}));
                (with_id(cert["id"].as_str().unwrap()), body)
            }
            ("POST", "/tokens") => (
                template.to_owned(),
                Some(json!({"name": format!("made-{n}"), "scopes": ["admin"], "expires_in": "1h"})),
            ),
            (_, t) if t.starts_with("/tokens/{id}") => {
                let victim = self
                    .admin(
                        "POST",
                        "/tokens",
                        // Within the reach of the admin-only caller (its scopes are a subset),
                        // out of the reach of a restricted admin (unrestricted).
                        Some(json!({"name": format!("victim-{n}"), "scopes": ["admin"]})),
                    )
                    .await;
                (with_id(victim["details"]["id"].as_str().unwrap()), None)
            }
            _ => (template.to_owned(), None),
        }
    }
}

async fn create_token(matrix: &Matrix, name: &str, body: Value) -> String {
    let mut body = body;
    body["name"] = json!(name);
    let created = matrix.admin("POST", "/tokens", Some(body)).await;
    created["token"].as_str().unwrap().to_owned()
}

/// A client whose connections come from 127.0.0.`n`, so that the matrix's many deliberate
/// authentication failures spread over addresses instead of tripping the per-address throttle.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .build()
        .unwrap()
}

/// Every route × every kind of caller: no token, a wrong one, an expired one, a revoked one,
/// one token per scope, an agent, and a label-restricted token aimed at its own team's and at
/// another team's certificates. Each call's status is asserted exactly.
#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix_covers_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--token-rate-limit", "0"]);
    let http = reqwest::Client::new();

    // The document lists exactly the routes of this table.
    let doc: Value = http
        .get(format!("{}/api/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.trim_start_matches("/api/v1").to_owned()));
            let scopes = &item[method]["security"][0]["token"];
            let listed = ROUTES
                .iter()
                .find(|r| r.method == method.to_uppercase() && r.path == path.trim_start_matches("/api/v1"));
            if let Some(listed) = listed {
                let expected: Vec<&str> = listed.scope.into_iter().collect();
                assert_eq!(scopes, &json!(expected), "{method} {path}: documented scope");
            }
        }
    }
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(
        documented.difference(&listed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes in the API but not in this test's ROUTES: add them with their scope and status"
    );
    assert_eq!(
        listed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes in ROUTES that the API does not have"
    );

    let matrix = Matrix {
        http: http.clone(),
        url: server.url.clone(),
        admin: server.token(),
        agent_name: "matrix-agent".to_owned(),
        serial: Default::default(),
    };
    let agent = matrix
        .admin("POST", "/agents", Some(json!({"name": "matrix-agent"})))
        .await;
    let agent_token = agent["token"].as_str().unwrap().to_owned();
    let expired = create_token(&matrix, "expired", json!({"scopes": ["read"], "expires_in": "1s"})).await;
    let revoked = create_token(&matrix, "revoked", json!({"scopes": ["read"]})).await;
    matrix.admin("POST", "/tokens/revoked/revoke", None).await;
    let mut callers = vec![
        Caller {
            label: "no token",
            token: None,
            scopes: None,
            restricted: false,
            other_team: false,
        },
        Caller {
            label: "wrong token",
            token: Some(format!("ck_0123456789abcdef_{}", "x".repeat(43))),
            scopes: None,
            restricted: false,
            other_team: false,
        },
        Caller {
            label: "expired token",
            token: Some(expired),
            scopes: None,
            restricted: false,
            other_team: false,
        },
        Caller {
            label: "revoked token",
            token: Some(revoked),
            scopes: None,
            restricted: false,
            other_team: false,
        },
        Caller {
            label: "agent",
            token: Some(agent_token),
            scopes: Some(vec!["agent"]),
            restricted: false,
            other_team: false,
        },
    ];
    for scope in ["read", "create", "update", "delete", "admin", "export-key"] {
        let token = create_token(&matrix, &format!("only-{scope}"), json!({"scopes": [scope]})).await;
        callers.push(Caller {
            label: scope,
            token: Some(token),
            scopes: Some(vec![scope]),
            restricted: false,
            other_team: false,
        });
    }
    let team_scopes = vec!["read", "create", "update", "delete", "export-key"];
    let team_token = create_token(
        &matrix,
        "team-a",
        json!({"scopes": team_scopes, "labels": {"team": "a"}}),
    )
    .await;
    for other_team in [false, true] {
        callers.push(Caller {
            label: if other_team {
                "team-a token, team b's resources"
            } else {
                "team-a token, own resources"
            },
            token: Some(team_token.clone()),
            scopes: Some(team_scopes.clone()),
            restricted: true,
            other_team,
        });
    }
    // A team's admin: every scope, restricted to team=a (finding 1 of the security review).
    let mut team_admin_scopes = team_scopes.clone();
    team_admin_scopes.push("admin");
    let team_admin = create_token(
        &matrix,
        "team-a-admin",
        json!({"scopes": team_admin_scopes, "labels": {"team": "a"}}),
    )
    .await;
    callers.push(Caller {
        label: "team-a admin token, own resources",
        token: Some(team_admin),
        scopes: Some(team_admin_scopes),
        restricted: true,
        other_team: false,
    });
    // Let the expired token's second pass.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let mut failures = Vec::new();
    let mut calls = 0;
    let mut failing_source = 2u8;
    let mut failed_from_source = 0;
    for route in ROUTES {
        for caller in &callers {
            let (path, body) = matrix.prepare(route, caller).await;
            let client = if caller.scopes.is_none() {
                // At most 15 failures per source address (the throttle allows 20).
                failed_from_source += 1;
                if failed_from_source > 15 {
                    failing_source += 1;
                    failed_from_source = 1;
                }
                client_from(failing_source)
            } else {
                http.clone()
            };
            let (status, answer) = matrix
                .call(&client, route.method, &path, caller.token.as_deref(), body)
                .await;
            calls += 1;
            let expected = caller.expected(route);
            if status != expected {
                failures.push(format!(
                    "{} {} as {}: expected {expected}, got {status}: {answer}",
                    route.method, route.path, caller.label
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "authorization matrix: {} routes x {} callers = {calls} calls, all as expected",
        ROUTES.len(),
        callers.len()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Performs each kind of action once, then finds exactly one audit record for each, with the
/// right actor, outcome, resource, request id and body hash; reads leave no record.
#[tokio::test(flavor = "multi_thread")]
async fn audit_trail_has_one_record_per_action() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let http = reqwest::Client::new();
    let matrix = Matrix {
        http: http.clone(),
        url: server.url.clone(),
        admin: server.token(),
        agent_name: "web-1".to_owned(),
        serial: Default::default(),
    };
    // Expires during the test: the sweep records it once.
    create_token(&matrix, "short-lived", json!({"scopes": ["read"], "expires_in": "2s"})).await;
    let ops = create_token(
        &matrix,
        "ops",
        json!({"scopes": ["read", "create", "update", "delete", "export-key"]}),
    )
    .await;
    let reader = create_token(&matrix, "reader", json!({"scopes": ["read"]})).await;
    let as_ops = |method: &'static str, path: String, body: Option<Value>| {
        let (http, url, ops) = (http.clone(), server.url.clone(), ops.clone());
        async move {
            let mut request = http
                .request(method.parse().unwrap(), format!("{url}/api/v1{path}"))
                .bearer_auth(&ops)
                .header("x-request-id", format!("test-{}", path.len()));
            let sent = body.map(|b| b.to_string()).unwrap_or_default();
            // State-changing calls are JSON, with or without a body (security review, finding 10).
            if method != "GET" && method != "DELETE" {
                request = request.header("content-type", "application/json").body(sent.clone());
            }
            let response = request.send().await.unwrap();
            let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body, request_id, sent)
        }
    };

    let create_body = json!({"common_name": "audited.internal", "labels": {"secret-ish": "label-value-xyz"}});
    let (status, created, create_request_id, create_sent) =
        as_ops("POST", "/certificates?wait=30".into(), Some(create_body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(create_request_id, format!("test-{}", "/certificates?wait=30".len()));
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _, _, _) = as_ops("POST", format!("/certificates/{id}/renew?wait=30"), None).await;
    assert_eq!(status, 200);
    let (status, _, _, _) = as_ops("POST", format!("/certificates/{id}/revoke"), Some(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _, _, _) = as_ops("DELETE", format!("/certificates/{id}"), None).await;
    assert_eq!(status, 204);
    // Reads leave no record.
    as_ops("GET", "/certificates".into(), None).await;
    as_ops("GET", "/jobs".into(), None).await;

    // A denied write, a failed write, a bad token.
    let denied = http
        .post(format!("{}/api/v1/certificates", server.url))
        .bearer_auth(&reader)
        .json(&json!({"common_name": "nope.internal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 403);
    matrix
        .call(
            &http,
            "POST",
            "/issuers",
            Some(&matrix.admin),
            Some(json!({"id": "x", "kind": "local", "acme": {}})),
        )
        .await;
    let (status, _) = matrix
        .call(&http, "GET", "/certificates", Some("ck_not_a_token"), None)
        .await;
    assert_eq!(status, 401);

    // Tokens and agents.
    let victim = create_token(&matrix, "victim", json!({"scopes": ["read"]})).await;
    matrix.admin("POST", "/tokens/victim/rotate", None).await;
    matrix.admin("POST", "/tokens/victim/revoke", None).await;
    drop(victim);
    let agent = matrix.admin("POST", "/agents", Some(json!({"name": "web-1"}))).await;
    let agent_token = agent["token"].as_str().unwrap().to_owned();
    let bound = matrix.certificate("a", true).await;
    let report =
        json!({"version": 1, "fingerprint": bound["fingerprint"], "targets": ["nginx"], "error": "nginx -t failed"});
    let (status, _) = matrix
        .call(
            &http,
            "POST",
            &format!("/agent/certificates/{}/deployments", bound["id"].as_str().unwrap()),
            Some(&agent_token),
            Some(report),
        )
        .await;
    assert_eq!(status, 201);
    matrix
        .call(&http, "POST", "/agent/heartbeat", Some(&agent_token), Some(json!({})))
        .await;

    // The expiry sweep runs every 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    let events = loop {
        let page = matrix.admin("GET", "/audit?limit=1000", None).await;
        let events = page["items"].as_array().unwrap().clone();
        if events.iter().any(|e| e["action"] == "token.expired") || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let find = |action: &str, actor: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["action"] == action && e["actor"] == actor)
            .cloned()
            .collect()
    };
    let one = |action: &str, actor: &str, outcome: &str| -> Value {
        let found = find(action, actor);
        assert_eq!(found.len(), 1, "{action} by {actor}: {found:?}\nall: {events:#?}");
        assert_eq!(found[0]["outcome"], outcome, "{action} by {actor}");
        found[0].clone()
    };
    let resource = format!("certificates/{id}");
    let create = one("certificate.create", "token:ops", "success");
    assert_eq!(create["resource"], resource.as_str());
    assert_eq!(create["request_id"], create_request_id.as_str());
    assert_eq!(create["body_sha256"], sha256_hex(create_sent.as_bytes()).as_str());
    assert_eq!(create["status"], 201);
    assert_eq!(create["client"], "127.0.0.1");
    // Two certificates were issued: this one and the agent's.
    let issued: Vec<Value> = find("certificate.issued", "system")
        .into_iter()
        .filter(|e| e["resource"] == resource.as_str())
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(
        one("certificate.renew", "token:ops", "success")["resource"],
        resource.as_str()
    );
    assert_eq!(
        one("certificate.renewed", "system", "success")["resource"],
        resource.as_str()
    );
    assert_eq!(
        one("certificate.revoke", "token:ops", "success")["resource"],
        resource.as_str()
    );
    assert_eq!(
        one("certificate.delete", "token:ops", "success")["resource"],
        resource.as_str()
    );
    assert_eq!(one("certificate.create", "token:reader", "denied")["status"], 403);
    assert_eq!(one("issuer.create", "token:admin", "failure")["status"], 400);
    assert!(
        one("auth.failure", "anonymous", "denied")["detail"]
            .as_str()
            .unwrap()
            .contains("GET /api/v1/certificates")
    );
    one("token.rotate", "token:admin", "success");
    one("token.revoke", "token:admin", "success");
    one("token.expired", "system", "success");
    one("agent.create", "token:admin", "success");
    let deployment = one("agent.deployment", "agent:web-1", "failure");
    assert_eq!(
        deployment["resource"],
        format!("certificates/{}", bound["id"].as_str().unwrap()).as_str()
    );
    // Four tokens were made (short-lived, ops, reader, victim), each recorded once.
    assert_eq!(find("token.create", "token:admin").len(), 4);
    // No reads, no heartbeats.
    for quiet in ["certificate.list", "job.list", "agent.heartbeat", "audit.list"] {
        assert!(events.iter().all(|e| e["action"] != quiet), "{quiet} recorded");
    }
    // The body is only hashed: its content is nowhere in the trail.
    let trail = serde_json::to_string(&events).unwrap();
    assert!(!trail.contains("label-value-xyz"));

    // CSV export through the CLI: a header and one line per event.
    let csv = server.cli_ok(&["audit", "--csv", "--action", "certificate."]);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,at,actor,action"), "{csv}");
    let certificate_events = events
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("certificate."))
        .count();
    assert_eq!(lines.len(), 1 + certificate_events, "{csv}");
    let table = server.cli_ok(&["audit", "--actor", "token:ops"]);
    assert!(table.contains("certificate.revoke"), "{table}");
}

/// Each token has its own request allowance (429 with Retry-After when spent, other tokens
/// unaffected), and no response ever allows a cross-origin caller.
#[tokio::test(flavor = "multi_thread")]
async fn per_token_rate_limits_and_no_cors() {
    let dir = tempfile::tempdir().unwrap();
    // 5 requests per second, bursts of 20.
    let server = Server::start(&dir.path().join("data"), &["--token-rate-limit", "5"]);
    let http = reqwest::Client::new();
    let matrix = Matrix {
        http: http.clone(),
        url: server.url.clone(),
        admin: server.token(),
        agent_name: String::new(),
        serial: Default::default(),
    };
    let busy = create_token(&matrix, "busy", json!({"scopes": ["read"]})).await;
    let calm = create_token(&matrix, "calm", json!({"scopes": ["read"]})).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let response = http
            .get(format!("{}/api/v1/issuers", server.url))
            .bearer_auth(&busy)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(response.headers()["content-type"], "application/problem+json");
        }
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (20..=23).contains(&ok),
        "the burst of 20 (plus refill) passes: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let (status, _) = matrix.call(&http, "GET", "/issuers", Some(&calm), None).await;
    assert_eq!(status, 200, "another token has its own allowance");

    // CORS is denied by default: no allow-origin on answers, no successful preflight.
    let answer = http
        .get(format!("{}/api/v1/issuers", server.url))
        .bearer_auth(&calm)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(answer.headers().get("access-control-allow-origin").is_none());
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/certificates", server.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(!preflight.status().is_success(), "preflight: {}", preflight.status());
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

/// mTLS: a client certificate from the local CA, or from a CA given with --tls-client-ca,
/// signs in as the token bound to its fingerprint, with that token's scopes. A certificate
/// with the same subject from an untrusted CA is refused at the handshake; a trusted
/// certificate that no token is bound to gets 401.
#[test]
fn client_certificates_sign_in_as_their_mapped_tokens() {
    use crate::support::{require_peer, sh};
    if !(require_peer("openssl", "openssl") && require_peer("curl", "curl")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // A partner CA we trust for clients, and a rogue CA we do not; both issue "CN=partner-bot".
    for ca in ["partner", "rogue"] {
        let (ok, text) = sh(
            &format!(
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {ca}-ca.key \
                 -out {ca}-ca.pem -days 2 -subj /CN={ca}-ca -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign 2>&1 && \
                 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {ca}-bot.key \
                 -subj /CN=partner-bot -out {ca}-bot.csr 2>&1 && \
                 printf 'extendedKeyUsage=clientAuth\\n' > ext.cnf && \
                 openssl x509 -req -in {ca}-bot.csr -CA {ca}-ca.pem -CAkey {ca}-ca.key -CAcreateserial \
                 -days 1 -extfile ext.cnf -out {ca}-bot.pem 2>&1"
            ),
            work,
        );
        assert!(ok, "{text}");
    }
    std::fs::write(work.join("config.yaml"), "tls:\n  auto_names: [127.0.0.1, localhost]\n").unwrap();
    let server = Server::start(
        &work.join("data"),
        &[
            "--config",
            work.join("config.yaml").to_str().unwrap(),
            "--tls-client-ca",
            work.join("partner-ca.pem").to_str().unwrap(),
        ],
    );
    std::fs::copy(work.join("data/ca.pem"), work.join("ca.pem")).unwrap();
    server.cli_ok(&[
        "token",
        "create",
        "--name",
        "partner",
        "--scope",
        "read",
        "--client-cert",
        work.join("partner-bot.pem").to_str().unwrap(),
    ]);
    // Client certificates from the local CA (asked for with --client-auth).
    for name in ["bot.internal", "unmapped.internal"] {
        let created: Value =
            serde_json::from_str(&server.cli_ok(&["cert", "create", name, "--client-auth", "--wait", "--json"]))
                .unwrap();
        let id = created["id"].as_str().unwrap();
        std::fs::write(
            work.join(format!("{name}.pem")),
            server.cli_ok(&["cert", "get", id, "--pem"]),
        )
        .unwrap();
        std::fs::write(
            work.join(format!("{name}.key")),
            server.cli_ok(&["cert", "get", id, "--key"]),
        )
        .unwrap();
    }
    server.cli_ok(&[
        "token",
        "create",
        "--name",
        "local-bot",
        "--scope",
        "read,create",
        "--client-cert",
        work.join("bot.internal.pem").to_str().unwrap(),
    ]);
    let call = |method: &str, path: &str, cert: Option<&str>| -> String {
        let auth = cert
            .map(|c| format!("--cert {c}.pem --key {c}.key"))
            .unwrap_or_default();
        let body = if method == "POST" {
            "-H 'content-type: application/json' -d '{\"common_name\":\"m.internal\"}'"
        } else {
            ""
        };
        sh(
            &format!(
                "curl -sS --cacert ca.pem {auth} -X {method} {body} -o out.json -w '%{{http_code}}' {}/api/v1{path}",
                server.url
            ),
            work,
        )
        .1
    };
    let status = call("GET", "/token", Some("bot.internal"));
    assert_eq!(
        status,
        "200",
        "{}",
        std::fs::read_to_string(work.join("out.json")).unwrap()
    );
    let me: Value = serde_json::from_str(&std::fs::read_to_string(work.join("out.json")).unwrap()).unwrap();
    assert_eq!(me["actor"], "token:local-bot");
    assert_eq!(me["scopes"], json!(["read", "create"]));
    assert_eq!(call("POST", "/certificates", Some("bot.internal")), "202");
    assert_eq!(call("GET", "/certificates", Some("partner-bot")), "200");
    assert_eq!(call("POST", "/certificates", Some("partner-bot")), "403", "read only");
    assert_eq!(call("GET", "/certificates", Some("unmapped.internal")), "401");
    assert_eq!(call("GET", "/certificates", None), "401");
    // Same subject, untrusted CA: the TLS handshake itself fails, no HTTP status at all.
    let rogue = call("GET", "/certificates", Some("rogue-bot"));
    assert!(rogue.starts_with("000"), "the handshake must fail: {rogue}");
    // Revoking the token ends the certificate's access at once.
    server.cli_ok(&["token", "revoke", "partner"]);
    assert_eq!(call("GET", "/certificates", Some("partner-bot")), "401");
}

/// The listener certificate the local CA issues for `tls.auto_names` is renewed by the running
/// server at two thirds of its life: new connections get the new one, no restart.
#[test]
fn the_listener_certificate_renews_itself() {
    use crate::support::{require_peer, sh};
    if !require_peer("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(
        work.join("config.yaml"),
        "tls:\n  auto_names: [127.0.0.1]\n  auto_validity_seconds: 60\n",
    )
    .unwrap();
    let server = Server::start(
        &work.join("data"),
        &["--config", work.join("config.yaml").to_str().unwrap()],
    );
    let addr = server.url.trim_start_matches("https://").to_owned();
    let served = || {
        let (ok, text) = sh(
            &format!(
                "openssl s_client -connect {addr} -CAfile data/ca.pem -verify_return_error </dev/null 2>/dev/null \
                 | openssl x509 -noout -serial -enddate"
            ),
            work,
        );
        assert!(ok, "{text}");
        text
    };
    let first = served();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(70);
    loop {
        let now = served();
        if now != first {
            eprintln!("renewed: {first} -> {now}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not renewed within 70 s: {now}");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    server.cli_ok(&["cert", "list"]);
}
