//! Notifications end to end: expiry thresholds with an injected clock, webhook retries and
//! dead-letter against a real HTTP receiver, and a failing ACME renewal (Pebble, a broken TXT
//! record) reported once by email (a real SMTP server, aiosmtpd) and once by webhook.

use std::path::Path;
use std::time::Duration;

use ck_domain::{ExpiryThresholds, RenewalPolicy, RenewalTrigger};
use ck_server::{ControlPlane, NewCertificate, NotifierEntry, ServerConfig};
use serde_json::Value;

/// A control plane in this process on a temp SQLite database, with one command notifier that
/// appends every message it gets (its JSON envelope) to `log`.
async fn control_plane(dir: &Path, log: &Path) -> (ControlPlane, tokio::sync::watch::Sender<bool>) {
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
            events: vec![ck_domain::EventKind::ThresholdCrossed],
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
    let (control_plane, _stop) = control_plane(dir.path(), &log).await;
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
        let (cert, job) = control_plane.create_certificate(request).await.unwrap();
        control_plane
            .wait_for_job(job.id, Duration::from_secs(30))
            .await
            .unwrap();
        ids.push(cert.id);
    }
    let steady = control_plane.certificate(ids[0]).await.unwrap();
    let not_after = steady.not_after.unwrap();
    let late_not_after = control_plane.certificate(ids[1]).await.unwrap().not_after.unwrap();
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
            control_plane.scan_expiry_thresholds(now).await.unwrap(),
            crossing,
            "at {now}"
        );
        expected += crossing;
        control_plane.deliver_notifications().await.unwrap();
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
            control_plane.certificate(*id).await.unwrap().status,
            ck_domain::CertificateStatus::Expired
        );
    }

    // A renewal starts the next version afresh: active, and its thresholds count again.
    let (job, _) = control_plane.renew(ids[0]).await.unwrap();
    control_plane
        .wait_for_job(job.id, Duration::from_secs(30))
        .await
        .unwrap();
    let renewed = control_plane.certificate(ids[0]).await.unwrap();
    assert_eq!(
        (renewed.status, renewed.current_version),
        (ck_domain::CertificateStatus::Active, 2)
    );
    let at = renewed.not_after.unwrap() - day * 30;
    assert_eq!(control_plane.scan_expiry_thresholds(at).await.unwrap(), 1);
}
