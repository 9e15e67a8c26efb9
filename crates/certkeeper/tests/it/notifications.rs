//! Notifications end to end: expiry thresholds with an injected clock, webhook retries and
//! dead-letter against a real HTTP receiver, and a failing ACME renewal (Pebble, a broken TXT
//! record) reported once by email (a real SMTP server, aiosmtpd) and once by webhook.

use std::path::Path;
use std::time::{Duration, Instant};

use ck_domain::{ExpiryThresholds, RenewalPolicy, RenewalTrigger};
use ck_server::{ControlPlane, NewCertificate, NotifierEntry, ServerConfig};
use ck_test_peers::pebble::{Pebble, PebbleOptions};
use ck_test_peers::smtp::SmtpSink;
use ck_test_peers::webhook::WebhookReceiver;
use serde_json::Value;

/// A control plane in this process on a temp SQLite database, with one command notifier that
/// appends every message it gets (its JSON envelope) to `log`.
async fn control_plane(
    dir: &Path,
    log: &Path,
    events: &[ck_domain::EventKind],
) -> (ControlPlane, tokio::sync::watch::Sender<bool>) {
    let store = ck_store::Store::connect(
        &ck_store::DatabaseUrl::sqlite_file(&dir.join("t.db")),
        ck_secrets::SecretCipher::new(ck_secrets::Kek::generate().unwrap()),
    )
    .await
    .unwrap();
    let mut config = ServerConfig::new("n1".into());
    let yaml = format!(
        "type: command\nprogram: /bin/sh\nargs: ['-c', 'cat >> {0}; echo >> {0}']\n",
        log.display()
    );
    let notifier: ck_notify::NotifierConfig = yaml_serde::from_str(&yaml).unwrap();
    config.notifications.notifiers.push(NotifierEntry {
        name: "log".into(),
        route: ck_domain::Route {
            events: events.to_vec(),
            labels: vec![],
        },
        notifier: std::sync::Arc::new(notifier.build().unwrap()),
    });
    let (control_plane, _) = ck_server::bootstrap(store, config, false).await.unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    ck_server::spawn_background_loops(&control_plane, None, shutdown)
        .await
        .unwrap();
    (control_plane, stop)
}

fn logged(log: &Path) -> Vec<Value> {
    // Deliveries run concurrently: two messages may share a line, so read a stream of values.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

/// Time moves through a 90-day certificate's last month (the domain takes `now`): each
/// threshold is announced once, a scan repeated at the same moment or after a restart of the
/// loop announces nothing more, the status goes expiring then expired, and a scan that comes
/// late after several thresholds announces only the nearest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_thresholds_fire_once_each_and_move_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified.jsonl");
    let (control_plane, _stop) = control_plane(dir.path(), &log, &[ck_domain::EventKind::ThresholdCrossed]).await;
    let mut ids = Vec::new();
    for name in ["steady.internal", "late.internal"] {
        let request = NewCertificate {
            name: Some(name.into()),
            common_name: Some(name.into()),
            validity_days: Some(90),
            // Renewal due 40 days before expiry, so every default threshold (30, 14, 7, 1, 0) means
            // something; "late" warns 7 days before and at expiry only.
            renewal_policy: Some(RenewalPolicy::new(RenewalTrigger::DaysBeforeExpiry(40), 0.0).unwrap()),
            expiry_thresholds: (name == "late.internal").then(|| ExpiryThresholds::new(vec![7, 0]).unwrap()),
            ..NewCertificate::default()
        };
        let (cert, job) = control_plane.certificates.create_certificate(request).await.unwrap();
        control_plane
            .certificates
            .wait_for_job(job.id, Duration::from_secs(30))
            .await
            .unwrap();
        ids.push(cert.id);
    }
    let steady = control_plane.certificates.certificate(ids[0]).await.unwrap();
    let not_after = steady.not_after.unwrap();
    let late_not_after = control_plane
        .certificates
        .certificate(ids[1])
        .await
        .unwrap()
        .not_after
        .unwrap();
    let day = time::Duration::days(1);

    let mut expected = 0;
    // (moment, certificates that cross a new threshold then)
    let steps = [
        (not_after - day * 31, 0),
        (not_after - day * 30, 1),
        (not_after - day * 30, 0),
        (not_after - day * 20, 0),
        (not_after - day * 14, 1),
        // Both certificates cross 7 days; "steady" crosses 7 and 1 at once and says "1 day".
        (late_not_after.max(not_after) - day / 2, 2),
        (late_not_after.max(not_after) - day / 2, 0),
        (late_not_after.max(not_after) + time::Duration::minutes(1), 2),
        (late_not_after.max(not_after) + day * 3, 0),
    ];
    for (now, crossing) in steps {
        assert_eq!(
            control_plane.notifications.scan_expiry_thresholds(now).await.unwrap(),
            crossing,
            "at {now}"
        );
        expected += crossing;
        control_plane.notifications.deliver_notifications().await.unwrap();
        assert_eq!(logged(&log).len(), expected, "at {now}");
    }
    let messages = logged(&log);
    let announced = |id: &ck_domain::CertificateId| -> Vec<u64> {
        messages
            .iter()
            .filter(|m| m["data"]["certificate"]["id"] == id.to_string())
            .map(|m| m["data"]["details"]["days"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(announced(&ids[0]), vec![30, 14, 1, 0]);
    assert_eq!(announced(&ids[1]), vec![7, 0]);
    let expired = messages.iter().find(|m| m["data"]["details"]["days"] == 0).unwrap();
    assert_eq!(expired["event"], "threshold_crossed");
    assert!(
        expired["subject"].as_str().unwrap().ends_with("has expired"),
        "{expired}"
    );
    let warned = messages.iter().find(|m| m["data"]["details"]["days"] == 14).unwrap();
    assert_eq!(warned["subject"], "certkeeper: steady.internal expires in 14 days");
    for id in &ids {
        assert_eq!(
            control_plane.certificates.certificate(*id).await.unwrap().status,
            ck_domain::CertificateStatus::Expired
        );
    }

    // A renewal starts the next version afresh: active, and its thresholds count again.
    let (job, _) = control_plane.certificates.renew(ids[0]).await.unwrap();
    control_plane
        .certificates
        .wait_for_job(job.id, Duration::from_secs(30))
        .await
        .unwrap();
    let renewed = control_plane.certificates.certificate(ids[0]).await.unwrap();
    assert_eq!(
        (renewed.status, renewed.current_version),
        (ck_domain::CertificateStatus::Active, 2)
    );
    let at = renewed.not_after.unwrap() - day * 30;
    assert_eq!(control_plane.notifications.scan_expiry_thresholds(at).await.unwrap(), 1);
}

/// An agent that stops sending heartbeats is announced once per silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_announced_once_per_silence() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified.jsonl");
    let (control_plane, _stop) = control_plane(dir.path(), &log, &[ck_domain::EventKind::AgentOffline]).await;
    let (agent, _token) = control_plane
        .agents
        .create_agent(
            "web-1",
            ck_server::AgentScope::Deploy,
            Default::default(),
            &ck_domain::Restriction::default(),
        )
        .await
        .unwrap();
    let id = agent.record.id.clone();
    let facts = ck_store::AgentFacts {
        hostname: Some("web-1.example".into()),
        ..ck_store::AgentFacts::default()
    };
    control_plane.agents.agent_heartbeat(&id, facts.clone()).await.unwrap();
    let now = ck_server::now();
    assert_eq!(
        control_plane.notifications.scan_offline_agents(now).await.unwrap(),
        0,
        "online"
    );
    let silent = now + time::Duration::minutes(10);
    assert_eq!(
        control_plane.notifications.scan_offline_agents(silent).await.unwrap(),
        1
    );
    assert_eq!(
        control_plane
            .notifications
            .scan_offline_agents(silent + time::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    // Back, then silent again: a new silence, a new notice.
    control_plane.agents.agent_heartbeat(&id, facts).await.unwrap();
    let again = ck_server::now() + time::Duration::minutes(10);
    assert_eq!(control_plane.notifications.scan_offline_agents(again).await.unwrap(), 1);
    control_plane.notifications.deliver_notifications().await.unwrap();
    let messages = logged(&log);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["event"], "agent_offline");
    assert_eq!(messages[0]["subject"], "certkeeper: agent web-1 is offline");
    assert!(
        messages[0]["text"].as_str().unwrap().contains("web-1.example"),
        "{}",
        messages[0]
    );
}

/// `GET`/`POST` an API path with the admin token through curl: the status and the JSON body.
fn api(server: &crate::support::Server, method: &str, path: &str) -> (u16, Value) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", method, "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", server.token()))
        // State-changing calls are JSON even without a body.
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("{}/api/v1{path}", server.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Polls `GET path` until `done` holds for its JSON (or 60 s pass).
fn wait_api(server: &crate::support::Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = api(server, "GET", path);
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {body}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn notifications_config(notifiers: &str) -> String {
    format!(
        "notifications:\n  max_attempts: 5\n  retry_base_delay_seconds: 0.2\n  retry_max_delay_seconds: 0.5\n  \
         notifiers:\n{notifiers}"
    )
}

/// A receiver that answers 500 three times and then 200 gets the event exactly once more
/// (4 requests, one delivery id, each signed); a receiver that is down for good ends in
/// dead-letter, which the API lists and requeues.
#[test]
fn webhook_retries_until_delivered_and_dead_letters_a_receiver_that_stays_down() {
    let flaky = WebhookReceiver::start(vec![500, 500, 500]);
    let down = format!("http://127.0.0.1:{}/hook", ck_test_peers::free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        notifications_config(&format!(
            "    - {{name: flaky, type: webhook, url: '{}', secret: s3cret, events: [issued]}}\n    \
             - {{name: down, type: webhook, url: '{down}', events: [issued]}}\n",
            flaky.url()
        )),
    )
    .unwrap();
    let server = crate::support::Server::start_logged(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        "info",
    );
    let created: Value =
        serde_json::from_str(&server.cli_ok(&["cert", "create", "hooked.internal", "--wait", "--json"])).unwrap();

    let requests = flaky.wait_for(4, Duration::from_secs(30));
    let answered: Vec<u16> = requests.iter().map(|r| r.answered).collect();
    assert_eq!(answered, vec![500, 500, 500, 200]);
    let delivery = &requests[0].headers["x-certkeeper-delivery"];
    for request in &requests {
        assert_eq!(&request.headers["x-certkeeper-delivery"], delivery, "one delivery id");
        assert_eq!(request.headers["x-certkeeper-event"], "issued");
        assert!(
            ck_notify::verify_signature(
                b"s3cret",
                &request.headers["x-certkeeper-timestamp"],
                &request.body,
                &request.headers["x-certkeeper-signature"],
            ),
            "bad signature: {:?}",
            request.headers
        );
    }
    let envelope = requests[3].json();
    assert_eq!(envelope["event"], "issued");
    assert_eq!(envelope["data"]["certificate"]["id"], created["id"]);
    assert_eq!(envelope["subject"], "certkeeper: hooked.internal issued (version 1)");

    // The dead one: five attempts to a closed port, then dead, with its last error.
    let dead = wait_api(&server, "/notifications?state=dead", |b| {
        b["items"].as_array().is_some_and(|items| !items.is_empty())
    });
    let dead = &dead["items"][0];
    assert_eq!(
        (dead["notifier"].as_str(), dead["attempts"].as_u64()),
        (Some("down"), Some(5)),
        "{dead}"
    );
    assert!(dead["last_error"].as_str().unwrap().contains("webhook"), "{dead}");
    let (_, delivered) = api(&server, "GET", "/notifications?state=delivered&notifier=flaky");
    assert_eq!(delivered["items"][0]["attempts"], 4, "{delivered}");
    assert_eq!(delivered["items"][0]["id"].as_str(), Some(delivery.as_str()));

    // Requeue: a fresh budget of attempts, then dead again; a delivered one cannot be requeued.
    let id = dead["id"].as_str().unwrap();
    let listed: Value =
        serde_json::from_str(&server.cli_ok(&["notification", "list", "--state", "dead", "--json"])).unwrap();
    assert_eq!(listed[0]["id"].as_str(), Some(id), "{listed}");
    let (status, requeued) = api(&server, "POST", &format!("/notifications/{id}/requeue"));
    assert_eq!(
        (status, requeued["state"].as_str()),
        (200, Some("pending")),
        "{requeued}"
    );
    wait_api(&server, &format!("/notifications/{id}"), |b| {
        b["state"] == "dead" && b["attempts"] == 5
    });
    let (status, problem) = api(&server, "POST", &format!("/notifications/{delivery}/requeue"));
    assert_eq!(status, 409, "{problem}");
    let refused = server.cli(&["notification", "requeue", delivery]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("not dead"), "{stderr}");
    // Nothing more reached the flaky receiver: delivered exactly once.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(flaky.requests().len(), 4);
}

/// `kill -9` while a receiver keeps failing loses nothing: after the restart the attempts go on
/// where they were, and the event reaches the receiver once, under one delivery id.
#[test]
fn notifications_survive_kill_9() {
    let receiver = WebhookReceiver::start(vec![500; 6]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let yaml = notifications_config(&format!(
        "    - {{name: hook, type: webhook, url: '{}', events: [issued]}}\n",
        receiver.url()
    ))
    .replace("max_attempts: 5", "max_attempts: 20")
    .replace("retry_max_delay_seconds: 0.5", "retry_max_delay_seconds: 0.4");
    std::fs::write(&config, yaml).unwrap();
    let mut server = crate::support::Server::start_logged(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        "info",
    );
    server.cli_ok(&["cert", "create", "survivor.internal", "--wait"]);
    receiver.wait_for(2, Duration::from_secs(30));
    server.kill9();
    let before = receiver.requests().len();
    assert!(before < 7, "the receiver should still be failing: {before} requests");
    server.start_again();
    let requests = receiver.wait_for(7, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let requests_now = receiver.requests();
    assert_eq!(requests_now.len(), requests.len(), "nothing after the delivery");
    let delivered: Vec<_> = requests_now.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(delivered.len(), 1, "{requests_now:?}");
    let ids: std::collections::BTreeSet<&String> = requests_now
        .iter()
        .map(|r| &r.headers["x-certkeeper-delivery"])
        .collect();
    assert_eq!(ids.len(), 1, "one delivery id across the restart");
    let (_, listed) = api(&server, "GET", "/notifications?state=delivered");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1), "{listed}");
}

/// A renewal that Pebble refuses (the name's DNS record now points where nothing answers)
/// produces exactly one "renewal failed" email (aiosmtpd) and one webhook, both carrying the
/// CA's problem document, though the job made several attempts.
#[test]
fn failing_acme_renewal_sends_one_email_and_one_webhook_with_the_cas_error() {
    let Some(pebble) = Pebble::start(PebbleOptions::default(), "renewal_failed_notice") else {
        return;
    };
    let Some(smtp) = SmtpSink::start("renewal_failed_notice") else {
        return;
    };
    let hook = WebhookReceiver::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let notifiers = format!(
        "    - {{name: hook, type: webhook, url: '{}', events: [renewal_failed]}}\n    \
         - {{name: mail, type: email, host: 127.0.0.1, port: {}, security: none, from: ck@example.com, \
         to: [ops@example.com], events: [renewal_failed]}}\n",
        hook.url(),
        smtp.port()
    );
    // Three attempts per renewal job, a second apart.
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "jobs:\n  max_attempts: 3\n  retry_base_delay_seconds: 1\n  retry_max_delay_seconds: 1\n{}{}",
            notifications_config(&notifiers),
            crate::acme::solvers_yaml(&pebble)
        ),
    )
    .unwrap();
    let server = crate::support::Server::start_logged(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        "info",
    );
    crate::acme::add_issuer(
        &server,
        &pebble,
        "pebble",
        &crate::acme::strs(&crate::acme::http01_args(&pebble)),
    );
    let created = crate::acme::create(&server, &["renewfail.example.com", "--issuer", "pebble"]);
    let id = created["id"].as_str().unwrap();

    pebble
        .challtestsrv()
        .unwrap()
        .add_a("renewfail.example.com", &["127.0.0.2"]);
    let renewed = server.cli(&["cert", "renew", id, "--wait", "--timeout", "60"]);
    assert!(!renewed.status.success(), "the renewal should fail");
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    let hooks = hook.wait_for(1, Duration::from_secs(30));
    // The job tries three times; only the first failure of the day is announced.
    let jobs = wait_api(&server, &format!("/jobs?certificate={id}"), |b| {
        b["items"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["kind"] == "renew" && j["state"] == "failed"))
    });
    let renewal = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "renew")
        .unwrap();
    assert_eq!(renewal["attempts"], 3, "{renewal}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(smtp.messages().len(), 1, "{:#?}", smtp.messages());
    assert_eq!(hook.requests().len(), 1);

    let envelope = hooks[0].json();
    assert_eq!(envelope["event"], "renewal_failed");
    let problem = &envelope["data"]["details"]["problem"];
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or_default()
            .starts_with("urn:ietf:params:acme:error:"),
        "{envelope:#}"
    );
    let mail = &mails[0];
    assert_eq!(mail["subject"], "certkeeper: renewal of renewfail.example.com failed");
    let body = mail["body"].as_str().unwrap();
    assert!(body.contains("The CA said:") && body.contains("127.0.0.2"), "{body}");
}
