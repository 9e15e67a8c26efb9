//! Agent registration, heartbeats and token scopes, through the real binary.

use ck_api_types::Heartbeat;
use serde_json::Value;

use crate::support::Server;

#[test]
fn agents_register_heartbeat_and_stay_in_their_lane() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let created: Value = serde_json::from_str(&server.cli_ok(&["agents", "add", "web-1", "--json"])).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ck_"));
    assert_eq!(created["agent"]["status"], "never-seen");
    // A taken name, a bad name: clear errors.
    let again = server.cli(&["agents", "add", "web-1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = server.cli(&["agents", "add", "web 1/../x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("letters, digits"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = ck_client::Client::new(&server.url, &token).unwrap();
    let admin = server.client();
    rt.block_on(async {
        let beat = Heartbeat {
            hostname: Some("web-1.example".into()),
            os: Some("linux".into()),
            arch: Some("x86_64".into()),
            version: Some("0.1.0".into()),
        };
        let answer = agent.heartbeat(&beat).await.unwrap();
        assert_eq!(
            (answer.agent.status.as_str(), answer.poll_interval_seconds),
            ("online", 30)
        );
        let listed = admin.agents().await.unwrap();
        assert_eq!(listed[0].hostname.as_deref(), Some("web-1.example"));
        assert_eq!(listed[0].status, "online");
        // Scopes: an agent token cannot use the admin API, an admin token is no agent.
        let refused = agent.certificates(&Default::default()).await.unwrap_err().to_string();
        assert!(refused.contains("lacks the 'read' scope"), "{refused}");
        let refused = admin.heartbeat(&beat).await.unwrap_err().to_string();
        assert!(refused.contains("lacks the 'agent' scope"), "{refused}");
    });
    // The token is stored hashed only.
    let db = std::fs::read(server.data_dir.join("certkeeper.db")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "agent token stored in clear"
    );
    let table = server.cli_ok(&["agents", "list"]);
    assert!(table.contains("web-1") && table.contains("online"), "{table}");

    // Revoking the agent locks it out at once; the list says so.
    server.cli_ok(&["agents", "revoke", "web-1"]);
    let refused = rt
        .block_on(agent.heartbeat(&Heartbeat::default()))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("401") || refused.contains("not valid"), "{refused}");
    assert!(server.cli_ok(&["agents", "list"]).contains("revoked"));
    let twice = server.cli(&["agents", "revoke", "web-1"]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("not found"));
}

/// A job waiting for an agent's CSR (the agent is gone) can be cancelled; a finished job and a
/// cancelled one cannot, with one line that says why.
#[test]
fn a_job_waiting_for_an_absent_agent_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    server.cli_ok(&["agents", "add", "gone-1", "--json"]);
    let bound: Value =
        serde_json::from_str(&server.cli_ok(&["cert", "create", "bound.test", "--agent", "gone-1", "--json"])).unwrap();
    let job = bound["job"]["id"].as_str().unwrap().to_owned();
    // The worker defers it until the CSR comes, which it never does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown: Value = serde_json::from_str(&server.cli_ok(&["job", "get", &job])).unwrap();
        if shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("waiting for agent"))
        {
            assert_eq!(shown["state"], "pending", "{shown}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never deferred: {shown}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let cancelled: Value = serde_json::from_str(&server.cli_ok(&["job", "cancel", &job, "--json"])).unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert!(
        cancelled["last_error"].as_str().unwrap().contains("cancelled by"),
        "{cancelled}"
    );
    let again = server.cli(&["job", "cancel", &job]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("the job is cancelled"),
        "{stderr}"
    );

    let issued: Value =
        serde_json::from_str(&server.cli_ok(&["cert", "create", "done.test", "--wait", "--json"])).unwrap();
    let done = server.cli(&["job", "cancel", issued["job"]["id"].as_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        !done.status.success() && stderr.contains("the job is succeeded"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
