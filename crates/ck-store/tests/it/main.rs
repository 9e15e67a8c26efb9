//! Store tests: one body of tests, run against SQLite and against a real PostgreSQL.
//!
//! PostgreSQL comes from `CERTKEEPER_TEST_POSTGRES_URL` (set by `scripts/test.sh`, which starts
//! a throwaway cluster). Without it the PostgreSQL half fails when `CERTKEEPER_REQUIRE_PEERS` or
//! `CI` is set, and is skipped with a loud message otherwise.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ck_domain::{
    Certificate, CertificateId, CertificateStatus, EventKind, ExpiryThresholds, IssuerId, Job, JobId, JobKind,
    JobState, KeySource, KeyType, Labels, RenewalPolicy, RevocationReason, RevocationScope, SubjectAltName,
};
use ck_secrets::{Kek, SecretCipher};
use ck_store::{
    AuditFilter, AuditRecord, CertificateFilter, Completion, DatabaseUrl, DeliveryOutcome, EnqueueOutcome, Fence,
    IssuerRecord, JobFilter, NewEvent, NewVersion, NodeRecord, NotificationFilter, NotificationState, RouteDecision,
    Store, StoreError, TokenRecord,
};
use time::{Duration, OffsetDateTime};

async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&DatabaseUrl::sqlite_file(&dir.path().join("t.db")), cipher())
        .await
        .unwrap();
    (store, dir)
}

/// A fresh database on the test PostgreSQL cluster, or `None` (skipped) when there is none.
async fn postgres_store() -> Option<Store> {
    let url = postgres_database().await?;
    Some(Store::connect(&url, cipher()).await.unwrap())
}

/// The URL of a fresh database on the test PostgreSQL cluster.
async fn postgres_database() -> Option<DatabaseUrl> {
    let Ok(admin_url) = std::env::var("CERTKEEPER_TEST_POSTGRES_URL") else {
        let required = std::env::var_os("CERTKEEPER_REQUIRE_PEERS").is_some() || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "CERTKEEPER_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh"
        );
        eprintln!("SKIPPED: PostgreSQL store tests (set CERTKEEPER_TEST_POSTGRES_URL or run scripts/test.sh)");
        return None;
    };
    use sqlx::Connection;
    let name = format!("ck_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').map(|(base, _)| base.to_owned()).unwrap();
    Some(format!("{base}/{name}").parse().unwrap())
}

macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (store, _dir) = super::sqlite_store().await; super::$name(store).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { if let Some(store) = super::postgres_store().await { super::$name(store).await; } })*
        }
    };
}

both_engines!(
    leader_lease_terms_and_fencing,
    tokens_rotate_revoke_and_expire,
    agents_register_and_heartbeat,
    agent_certificates_wait_for_csrs_and_record_deployments,
    acme_issuer_settings_account_and_health,
    identifier_backoff_defer_and_lease_extension,
    issue_and_renew_lifecycle,
    one_active_job_per_certificate,
    concurrent_claims_never_share_a_job,
    failures_retry_then_fail_and_stale_claims_are_fenced,
    revoke_list_and_delete,
    migrations_are_idempotent,
    batches_cross_statement_chunks,
    events_route_to_notifications_that_retry_die_and_requeue,
    certificates_search_sort_page_and_count,
);

mod secrets;

fn cipher() -> SecretCipher {
    SecretCipher::new(Kek::generate().unwrap())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

async fn with_issuer(store: &Store) {
    let record = IssuerRecord {
        id: "local".into(),
        kind: "local".into(),
        root_cert_pem: None,
        root_key_pem: None,
        intermediate_cert_pem: None,
        intermediate_key_pem: None,
        settings: None,
        account_credentials: None,
        account_url: None,
        health: None,
        created_at: now(),
    };
    store.insert_issuer_if_absent(&record).await.unwrap();
    assert!(
        !store.insert_issuer_if_absent(&record).await.unwrap(),
        "second insert is a no-op"
    );
}

fn new_certificate(name: &str) -> Certificate {
    Certificate {
        id: CertificateId::new(),
        name: name.into(),
        common_name: name.into(),
        sans: vec![SubjectAltName::parse(name).unwrap()],
        issuer_id: IssuerId::local(),
        key_type: KeyType::EcdsaP256,
        key_source: KeySource::Csr,
        csr_pem: Some("csr".into()),
        challenge: None,
        agent_id: None,
        status: CertificateStatus::Pending,
        validity: Duration::days(90),
        renewal_policy: RenewalPolicy::default(),
        expiry_thresholds: None,
        labels: Labels::default(),
        client_auth: false,
        current_version: 0,
        serial: None,
        fingerprint: None,
        not_before: None,
        not_after: None,
        renew_at: None,
        last_error: None,
        revoked_at: None,
        revocation_reason: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn new_job(certificate_id: CertificateId, kind: JobKind) -> Job {
    Job {
        id: JobId::new(),
        kind,
        certificate_id,
        state: JobState::Pending,
        attempts: 0,
        max_attempts: 3,
        run_after: now(),
        last_error: None,
        problem: None,
        created_at: now(),
        updated_at: now(),
        finished_at: None,
    }
}

fn version(serial: &str) -> NewVersion {
    NewVersion {
        serial: serial.into(),
        fingerprint: format!("fp-{serial}"),
        cert_pem: "leaf".into(),
        chain_pem: "leaf+chain".into(),
        csr_pem: "csr".into(),
        private_key_pem: None,
        not_before: now(),
        not_after: now() + Duration::days(90),
    }
}

async fn create(store: &Store, name: &str) -> Certificate {
    let cert = new_certificate(name);
    store
        .create_certificate(&cert, &new_job(cert.id, JobKind::Issue))
        .await
        .unwrap();
    cert
}

async fn issue_and_renew_lifecycle(store: Store) {
    with_issuer(&store).await;
    let cert = create(&store, "app.internal").await;
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].attempt, claimed[0].job.state), (1, JobState::Running));
    let renew_at = now() + Duration::days(60);
    let completion = Completion {
        claimed: claimed[0].clone(),
        version: version("01"),
        renew_at,
    };
    assert_eq!(
        store.complete_jobs("w1", &[completion], now()).await.unwrap(),
        vec![Some(1)]
    );

    let stored = store.certificate(cert.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.current_version, stored.serial.as_deref()),
        (CertificateStatus::Active, 1, Some("01"))
    );
    assert_eq!(stored.renew_at, Some(renew_at));
    assert!(
        store
            .due_for_renewal(now(), Duration::minutes(15), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .due_for_renewal(renew_at, Duration::minutes(15), 10)
            .await
            .unwrap(),
        vec![cert.id]
    );

    let renewal = store.enqueue(&new_job(cert.id, JobKind::Renew)).await.unwrap();
    assert!(matches!(renewal, EnqueueOutcome::Created(_)));
    assert!(
        store
            .due_for_renewal(renew_at, Duration::minutes(15), 10)
            .await
            .unwrap()
            .is_empty(),
        "a certificate with an active job is not due"
    );
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 10).await.unwrap();
    let completion = Completion {
        claimed: claimed[0].clone(),
        version: version("02"),
        renew_at,
    };
    assert_eq!(
        store.complete_jobs("w1", &[completion], now()).await.unwrap(),
        vec![Some(2)]
    );
    let versions = store.versions(cert.id).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.serial.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "01"), (2, "02")]
    );
    let (v2, key) = store.version_with_key(cert.id, 2).await.unwrap().unwrap();
    assert_eq!((v2.serial.as_str(), key), ("02", None));

    // A duplicate serial is refused by the database, and the whole batch rolls back.
    store.enqueue(&new_job(cert.id, JobKind::Renew)).await.unwrap();
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 10).await.unwrap();
    let duplicate = Completion {
        claimed: claimed[0].clone(),
        version: version("01"),
        renew_at,
    };
    assert!(matches!(
        store.complete_jobs("w1", &[duplicate], now()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.versions(cert.id).await.unwrap().len(), 2);
    assert_eq!(
        store.job(claimed[0].job.id).await.unwrap().unwrap().state,
        JobState::Running
    );

    // Each stored version left one audit record, committed with it; the rolled-back one none.
    let filter = AuditFilter {
        action: Some("certificate.".into()),
        limit: 100,
        ..AuditFilter::default()
    };
    let (events, more) = store.audit_events(&filter).await.unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["certificate.issued", "certificate.renewed"]);
    assert!(!more);
    assert!(
        events
            .iter()
            .all(|e| e.actor == "system" && e.resource.as_deref() == Some(format!("certificates/{}", cert.id).as_str()))
    );
}

async fn leader_lease_terms_and_fencing(store: Store) {
    let t = |s: i64| now() + Duration::seconds(s);
    let ttl = Duration::seconds(10);
    // First come: n1 takes it (epoch 1); n2 cannot while it is live; n1's renewal keeps it.
    assert_eq!(
        store.acquire_lease("leader", "n1", t(0), t(0) + ttl).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store.acquire_lease("leader", "n2", t(1), t(1) + ttl).await.unwrap(),
        None
    );
    assert_eq!(
        store.acquire_lease("leader", "n1", t(2), t(2) + ttl).await.unwrap(),
        Some(1)
    );
    let lease = store.lease("leader").await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch, lease.expires_at), ("n1", 1, t(12)));
    // n1 pauses past its lease: n2 takes over in a new term, and n1's stale write is refused.
    assert_eq!(
        store.acquire_lease("leader", "n2", t(13), t(13) + ttl).await.unwrap(),
        Some(2)
    );
    with_issuer(&store).await;
    let cert = create(&store, "fenced.example").await;
    let job = new_job(cert.id, JobKind::Renew);
    let stale = Fence {
        lease: "leader".into(),
        holder: "n1".into(),
        epoch: 1,
    };
    assert!(matches!(
        store.enqueue_fenced(&[&job], &stale).await,
        Err(StoreError::Fenced(_))
    ));
    let health = ck_store::IssuerHealth {
        healthy: false,
        detail: "stale".into(),
        checked_at: now(),
    };
    assert!(matches!(
        store.set_issuer_health("local", &health, &stale).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        store.acquire_lease("leader", "n1", t(14), t(14) + ttl).await,
        Ok(None)
    ));
    let current = Fence {
        lease: "leader".into(),
        holder: "n2".into(),
        epoch: 2,
    };
    // The certificate's issue job is still active: the renewal is skipped, not an error.
    assert_eq!(store.enqueue_fenced(&[&job], &current).await.unwrap(), 0);
    // A graceful release lets the next node in at once, in a new term.
    assert!(store.release_lease(&current, t(15)).await.unwrap());
    assert_eq!(
        store.acquire_lease("leader", "n3", t(15), t(15) + ttl).await.unwrap(),
        Some(3)
    );
    // The same holder coming back after its own lease ran out also starts a new term.
    assert_eq!(
        store.acquire_lease("leader", "n3", t(40), t(40) + ttl).await.unwrap(),
        Some(4)
    );

    let node = |id: &str, seen: i64| NodeRecord {
        node_id: id.into(),
        address: Some("127.0.0.1:1".into()),
        version: Some("0.1.0".into()),
        started_at: t(0),
        last_seen: t(seen),
    };
    store.node_heartbeat(&node("n2", 1)).await.unwrap();
    store.node_heartbeat(&node("n1", 1)).await.unwrap();
    store.node_heartbeat(&node("n1", 5)).await.unwrap();
    let nodes = store.cluster_nodes().await.unwrap();
    assert_eq!(nodes, [node("n1", 5), node("n2", 1)]);
}

async fn tokens_rotate_revoke_and_expire(store: Store) {
    let token = |id: &str, name: &str, expires_at: Option<OffsetDateTime>| TokenRecord {
        id: id.into(),
        name: name.into(),
        token_key: Some(format!("key-{id}")),
        token_hash: format!("hash-{id}"),
        scopes: "read".into(),
        restriction: Some(r#"{"labels":{"team":"a"}}"#.into()),
        expires_at,
        expired_at: None,
        revoked_at: None,
        rotated_at: None,
        created_by: Some("token:admin".into()),
        created_at: now(),
        client_subject: None,
        client_cert_sha256: None,
    };
    store.insert_token(&token("t1", "ci", None)).await.unwrap();
    store
        .insert_token(&token("t2", "short", Some(now() + Duration::hours(1))))
        .await
        .unwrap();
    store.insert_token(&token("t3", "other", None)).await.unwrap();
    let mut same_key = token("t4", "x", None);
    same_key.token_key = Some("key-t1".into());
    assert!(matches!(
        store.insert_token(&same_key).await,
        Err(StoreError::Conflict(_))
    ));

    let rotated = store.rotate_token("t1", "key-new", "hash-new", now()).await.unwrap();
    assert_eq!(
        (rotated.token_key.as_deref(), rotated.token_hash.as_str()),
        (Some("key-new"), "hash-new")
    );
    assert_eq!(rotated.rotated_at, Some(now()));

    assert!(store.mark_expired_tokens(now()).await.unwrap().is_empty());
    let later = now() + Duration::hours(2);
    let expired = store.mark_expired_tokens(later).await.unwrap();
    assert_eq!(expired.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["t2"]);
    assert!(store.mark_expired_tokens(later).await.unwrap().is_empty(), "once only");

    let revoked = store.revoke_token("t1", later).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(later));
    assert!(matches!(
        store.revoke_token("t1", later).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.rotate_token("t1", "k", "h", later).await,
        Err(StoreError::NotFound)
    ));
    // The admin reset revokes the old token of that name and stores the new one.
    store.replace_token(&token("t5", "short", None)).await.unwrap();
    let tokens = store.tokens().await.unwrap();
    let live: Vec<&str> = tokens
        .iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(live, ["t3", "t5"]);
}

async fn one_active_job_per_certificate(store: Store) {
    with_issuer(&store).await;
    let cert = create(&store, "a.internal").await;
    let again = store.enqueue(&new_job(cert.id, JobKind::Renew)).await.unwrap();
    let EnqueueOutcome::AlreadyActive(existing) = again else {
        panic!("expected the existing job, got {again:?}")
    };
    assert_eq!(existing.kind, JobKind::Issue);
    let (jobs, more) = store
        .jobs(&JobFilter {
            certificate_id: Some(cert.id),
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!((jobs.len(), more), (1, false));
}

async fn concurrent_claims_never_share_a_job(store: Store) {
    with_issuer(&store).await;
    for i in 0..120 {
        create(&store, &format!("h{i}.internal")).await;
    }
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{worker}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_jobs(&owner, now(), Duration::minutes(5), 7).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                mine.extend(batch.into_iter().map(|c| c.job.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (120, 120));
    // Leases expire: a later claim picks the abandoned jobs up again, with a new attempt number.
    let reclaimed = store
        .claim_jobs("w9", now() + Duration::minutes(6), Duration::minutes(5), 500)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 120);
    assert!(reclaimed.iter().all(|c| c.attempt == 2));
    assert_eq!(store.release_jobs_of("w9", now()).await.unwrap(), 120);
}

async fn failures_retry_then_fail_and_stale_claims_are_fenced(store: Store) {
    with_issuer(&store).await;
    let cert = create(&store, "f.internal").await;
    let first = store
        .claim_jobs("w1", now(), Duration::seconds(30), 1)
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .fail_job(
                "w1",
                &first,
                "CA unreachable",
                Some(r#"{"type":"urn:ietf:params:acme:error:serverInternal"}"#),
                Some(now() + Duration::seconds(5)),
                now()
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_jobs("w1", now(), Duration::seconds(30), 1)
            .await
            .unwrap()
            .is_empty(),
        "backoff respected"
    );
    let stored = store.certificate(cert.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.last_error.as_deref()),
        (CertificateStatus::Pending, Some("CA unreachable"))
    );

    let second = store
        .claim_jobs("w1", now() + Duration::seconds(6), Duration::seconds(30), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.attempt, 2);
    // The first claim is stale now: neither its failure nor its completion may land.
    assert!(!store.fail_job("w1", &first, "late", None, None, now()).await.unwrap());
    let late = Completion {
        claimed: first.clone(),
        version: version("aa"),
        renew_at: now(),
    };
    assert_eq!(store.complete_jobs("w1", &[late], now()).await.unwrap(), vec![None]);
    assert!(
        store
            .fail_job("w1", &second, "refused: bad name", None, None, now())
            .await
            .unwrap()
    );
    let job = store.job(second.job.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.last_error.as_deref()),
        (JobState::Failed, 2, Some("refused: bad name"))
    );
    assert!(job.finished_at.is_some());
    assert_eq!(
        store.certificate(cert.id).await.unwrap().unwrap().status,
        CertificateStatus::Failed
    );
    assert!(store.versions(cert.id).await.unwrap().is_empty());
}

async fn revoke_list_and_delete(store: Store) {
    with_issuer(&store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&store, &format!("l{i}.internal")).await.id);
    }
    let claimed = store.claim_jobs("w", now(), Duration::minutes(1), 3).await.unwrap();
    let completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| Completion {
            claimed: c.clone(),
            version: version(&format!("s{i}")),
            renew_at: now(),
        })
        .collect();
    store.complete_jobs("w", &completions, now()).await.unwrap();

    let page = |status, cursor, limit| CertificateFilter {
        status,
        cursor,
        limit,
        ..CertificateFilter::default()
    };
    let first = store.certificates(&page(None, None, 2), now()).await.unwrap();
    assert_eq!((first.items.len(), first.more), (2, true));
    let rest = store
        .certificates(&page(None, Some(first.items[1].id), 10), now())
        .await
        .unwrap();
    assert_eq!((rest.items.len(), rest.more), (3, false));
    let active = store
        .certificates(&page(Some(CertificateStatus::Active), None, 10), now())
        .await
        .unwrap();
    assert_eq!(active.items.len(), 3);
    let expired = store
        .certificates(
            &page(Some(CertificateStatus::Expired), None, 10),
            now() + Duration::days(91),
        )
        .await
        .unwrap();
    assert_eq!(
        expired.items.len(),
        3,
        "active certificates past not_after count as expired"
    );
    let expiring = CertificateFilter {
        expiring_before: Some(now() + Duration::days(100)),
        limit: 10,
        ..CertificateFilter::default()
    };
    assert_eq!(store.certificates(&expiring, now()).await.unwrap().items.len(), 3);

    let issued = claimed[0].job.certificate_id;
    let (revoked, versions) = store
        .revoke_certificate(
            issued,
            RevocationReason::KeyCompromise,
            RevocationScope::Unexpired,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(versions, vec![1]);
    assert_eq!(
        (revoked.status, revoked.revocation_reason),
        (CertificateStatus::Revoked, Some(RevocationReason::KeyCompromise))
    );
    assert!(matches!(
        store
            .revoke_certificate(issued, RevocationReason::Unspecified, RevocationScope::Unexpired, now())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .revoke_certificate(
                CertificateId::new(),
                RevocationReason::Unspecified,
                RevocationScope::Unexpired,
                now()
            )
            .await,
        Err(StoreError::NotFound)
    ));
    let counts = store.certificate_counts().await.unwrap();
    assert_eq!(
        counts,
        vec![
            ("active".to_owned(), "local".to_owned(), 2),
            ("pending".to_owned(), "local".to_owned(), 2),
            ("revoked".to_owned(), "local".to_owned(), 1)
        ]
    );
    let times = store.certificate_times().await.unwrap();
    assert_eq!(times.len(), 4, "revoked certificates have no expiry series");
    assert_eq!(times.iter().filter(|t| t.not_after.is_some()).count(), 2);

    assert!(store.delete_certificate(ids[4], false, now()).await.unwrap());
    assert!(!store.delete_certificate(ids[4], false, now()).await.unwrap());
    assert!(store.certificate(ids[4]).await.unwrap().is_none());

    // The revocation stays on the issuer's list, even after the certificate is deleted, until
    // the certificate expires.
    let serial = revoked.serial.clone().unwrap();
    let listed = store.revocations("local", now()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].serial.as_str(), listed[0].reason, listed[0].revoked_at),
        (serial.as_str(), RevocationReason::KeyCompromise, now())
    );
    assert!(store.delete_certificate(issued, false, now()).await.unwrap());
    assert_eq!(store.revocations("local", now()).await.unwrap().len(), 1);
    assert!(
        store
            .revocations("local", now() + Duration::days(91))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.revocations("other", now()).await.unwrap().is_empty());
    assert_eq!(store.next_crl_number("local").await.unwrap(), 1);
    assert_eq!(store.next_crl_number("local").await.unwrap(), 2);
    assert_eq!(store.next_crl_number("other").await.unwrap(), 1);
}

async fn migrations_are_idempotent(store: Store) {
    // Connecting applies migrations; a store that is already migrated must accept it again.
    store.ping().await.unwrap();
    with_issuer(&store).await;
    assert_eq!(store.issuers().await.unwrap().len(), 1);
}

async fn batches_cross_statement_chunks(store: Store) {
    with_issuer(&store).await;
    let certs: Vec<Certificate> = (0..250).map(|i| new_certificate(&format!("b{i}.internal"))).collect();
    let jobs: Vec<Job> = certs.iter().map(|c| new_job(c.id, JobKind::Issue)).collect();
    let pairs: Vec<(&Certificate, &Job)> = certs.iter().zip(&jobs).collect();
    store.create_certificates(&pairs).await.unwrap();
    let ids: Vec<CertificateId> = certs.iter().map(|c| c.id).collect();
    assert_eq!(store.certificates_by_ids(&ids).await.unwrap().len(), 250);

    let claimed = store.claim_jobs("w", now(), Duration::minutes(1), 300).await.unwrap();
    assert_eq!(claimed.len(), 250);
    let mut completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| Completion {
            claimed: c.clone(),
            version: version(&format!("{i:04}")),
            renew_at: now(),
        })
        .collect();
    // One stale claim in the middle of the second chunk: it alone is skipped.
    completions[210].claimed.attempt = 99;
    let stored = store.complete_jobs("w", &completions, now()).await.unwrap();
    assert_eq!(stored.iter().filter(|v| **v == Some(1)).count(), 249);
    assert_eq!(stored[210], None);
    let skipped = completions[210].claimed.job.certificate_id;
    assert!(store.versions(skipped).await.unwrap().is_empty());
    assert_eq!(
        store.job(completions[210].claimed.job.id).await.unwrap().unwrap().state,
        JobState::Running
    );
    let done = completions[0].claimed.job.certificate_id;
    let (stored_version, _) = store.version_with_key(done, 1).await.unwrap().unwrap();
    assert_eq!(stored_version.serial, "0000");
    assert_eq!(
        store.certificate(done).await.unwrap().unwrap().serial.as_deref(),
        Some("0000")
    );
}

async fn acme_issuer_settings_account_and_health(store: Store) {
    assert!(
        store
            .upsert_issuer_settings("le", "acme", r#"{"directory":"a"}"#, now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .upsert_issuer_settings("le", "acme", r#"{"directory":"a"}"#, now())
            .await
            .unwrap(),
        "same settings: no change"
    );
    assert!(
        store
            .upsert_issuer_settings("le", "acme", r#"{"directory":"b"}"#, now())
            .await
            .unwrap()
    );
    // Two nodes registering at once: the first stored account stays.
    assert!(
        store
            .set_issuer_account_if_absent("le", "{creds}", "https://ca/acct/1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_issuer_account_if_absent("le", "{other}", "https://ca/acct/2")
            .await
            .unwrap()
    );
    let health = ck_store::IssuerHealth {
        healthy: false,
        detail: "directory unreachable".into(),
        checked_at: now(),
    };
    let epoch = store
        .acquire_lease("leader", "n1", now(), now() + Duration::seconds(10))
        .await
        .unwrap()
        .unwrap();
    let fence = Fence {
        lease: "leader".into(),
        holder: "n1".into(),
        epoch,
    };
    store.set_issuer_health("le", &health, &fence).await.unwrap();
    let record = store.issuer("le").await.unwrap().unwrap();
    assert_eq!(record.settings.as_deref(), Some(r#"{"directory":"b"}"#));
    assert_eq!(record.account_credentials.as_deref(), Some("{creds}"));
    assert_eq!(record.account_url.as_deref(), Some("https://ca/acct/1"));
    assert_eq!(
        record.health.map(|h| (h.healthy, h.detail)),
        Some((false, "directory unreachable".into()))
    );
    assert!(
        !format!("{:?}", store.issuers().await.unwrap()).contains("creds"),
        "Debug hides secrets"
    );
    assert!(store.issuer("nope").await.unwrap().is_none());

    // Turning unhealthy is one event; staying so is none; recovering and failing again is new.
    let unhealthy_events = |events: Vec<ck_store::EventRecord>| {
        events
            .iter()
            .filter(|e| e.kind == EventKind::IssuerUnhealthy && e.subject.as_deref() == Some("le"))
            .count()
    };
    assert_eq!(unhealthy_events(store.unrouted_events(100).await.unwrap()), 1);
    let later = |s: i64, healthy: bool| ck_store::IssuerHealth {
        healthy,
        detail: "check".into(),
        checked_at: now() + Duration::seconds(s),
    };
    store.set_issuer_health("le", &later(1, false), &fence).await.unwrap();
    assert_eq!(unhealthy_events(store.unrouted_events(100).await.unwrap()), 1);
    store.set_issuer_health("le", &later(2, true), &fence).await.unwrap();
    store.set_issuer_health("le", &later(3, false), &fence).await.unwrap();
    assert_eq!(unhealthy_events(store.unrouted_events(100).await.unwrap()), 2);
}

async fn identifier_backoff_defer_and_lease_extension(store: Store) {
    with_issuer(&store).await;
    let names = vec!["a.example".to_owned(), "b.example".to_owned()];
    assert!(
        store
            .identifier_backoff("local", &names, now())
            .await
            .unwrap()
            .is_none()
    );
    let most = store
        .record_identifier_failures("local", &names[..1], now(), |n| Duration::seconds(60 * i64::from(n)))
        .await
        .unwrap();
    assert_eq!(most, 1);
    let most = store
        .record_identifier_failures("local", &names, now(), |n| Duration::seconds(60 * i64::from(n)))
        .await
        .unwrap();
    assert_eq!(most, 2);
    let (name, until) = store.identifier_backoff("local", &names, now()).await.unwrap().unwrap();
    assert_eq!(name, "a.example");
    assert!(until > now() + Duration::seconds(100));
    assert!(
        store
            .identifier_backoff("local", &names, now() + Duration::hours(1))
            .await
            .unwrap()
            .is_none()
    );
    store.clear_identifier_backoff("local", &names).await.unwrap();
    assert!(
        store
            .identifier_backoff("local", &names, now())
            .await
            .unwrap()
            .is_none()
    );

    let cert = create(&store, "defer.internal").await;
    let claimed = store
        .claim_jobs("w1", now(), Duration::minutes(1), 1)
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .extend_lease("w1", &claimed, now() + Duration::minutes(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .extend_lease("w2", &claimed, now() + Duration::minutes(5))
            .await
            .unwrap(),
        "fenced"
    );
    assert!(
        store
            .claim_jobs("w2", now() + Duration::minutes(2), Duration::minutes(1), 1)
            .await
            .unwrap()
            .is_empty(),
        "the extended lease holds"
    );
    assert!(
        store
            .defer_job("w1", &claimed, "backing off", now() + Duration::seconds(30), now())
            .await
            .unwrap()
    );
    let job = store.job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.last_error.as_deref()),
        (JobState::Pending, 0, Some("backing off"))
    );
    let again = store
        .claim_jobs("w1", now() + Duration::seconds(31), Duration::minutes(1), 1)
        .await
        .unwrap();
    assert_eq!(again[0].attempt, 1, "a deferral does not use up an attempt");
    assert!(
        store
            .fail_job("w1", &again[0], "CA said no", Some(r#"{"type":"x"}"#), None, now())
            .await
            .unwrap()
    );
    let job = store.job(claimed.job.id).await.unwrap().unwrap();
    assert_eq!(job.problem.as_deref(), Some(r#"{"type":"x"}"#));
    let _ = cert;
}

/// An agent's token row as the server registers it.
fn agent_credential(id: &str, name: &str, scope: &str, key: &str, hash: &str) -> ck_store::AgentCredential {
    ck_store::AgentCredential {
        id: id.to_owned(),
        name: name.to_owned(),
        scope: scope.to_owned(),
        token_key: Some(key.to_owned()),
        token_hash: hash.to_owned(),
    }
}

async fn agents_register_and_heartbeat(store: Store) {
    let team_b = Labels::new([("team".to_owned(), "b".to_owned())].into()).unwrap();
    store
        .insert_agent(
            &agent_credential("a1", "web-1", "deploy", "k1", "hash-1"),
            &Labels::default(),
            now(),
        )
        .await
        .unwrap();
    let taken = store
        .insert_agent(
            &agent_credential("a2", "web-1", "deploy", "k2", "hash-2"),
            &Labels::default(),
            now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict(_)), "{taken:?}");
    store
        .insert_agent(&agent_credential("a3", "db-1", "read", "k3", "hash-3"), &team_b, now())
        .await
        .unwrap();
    let agents = store.agents().await.unwrap();
    assert_eq!(
        agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["db-1", "web-1"]
    );
    // Labels round-trip; an agent registered without any has none.
    assert_eq!((&agents[0].labels, &agents[1].labels), (&team_b, &Labels::default()));
    assert_eq!(store.agent("db-1").await.unwrap().unwrap().labels, team_b);
    assert_eq!(agents[1].last_seen, None);
    let mut credentials: Vec<_> = store
        .agent_credentials()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.token_key, c.token_hash, c.id, c.scope))
        .collect();
    credentials.sort();
    assert_eq!(
        credentials,
        [
            (
                Some("k1".to_owned()),
                "hash-1".to_owned(),
                "a1".to_owned(),
                "deploy".to_owned()
            ),
            (
                Some("k3".to_owned()),
                "hash-3".to_owned(),
                "a3".to_owned(),
                "read".to_owned()
            )
        ]
    );
    let facts = ck_store::AgentFacts {
        hostname: Some("web-1.example".into()),
        os: Some("linux".into()),
        arch: Some("x86_64".into()),
        version: Some("0.1.0".into()),
    };
    let seen = now() + Duration::seconds(5);
    let agent = store.agent_heartbeat("a1", &facts, seen).await.unwrap().unwrap();
    assert_eq!((agent.facts, agent.last_seen), (facts.clone(), Some(seen)));
    assert!(store.agent_heartbeat("gone", &facts, seen).await.unwrap().is_none());
}

async fn agent_certificates_wait_for_csrs_and_record_deployments(store: Store) {
    with_issuer(&store).await;
    store
        .insert_agent(
            &agent_credential("a1", "web-1", "deploy", "k1", "hash-1"),
            &Labels::default(),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(store.agent("web-1").await.unwrap().unwrap().id, "a1");
    assert_eq!(store.agent("a1").await.unwrap().unwrap().scope, "deploy");
    let mut cert = new_certificate("web.internal");
    cert.key_source = KeySource::Agent;
    cert.csr_pem = None;
    cert.agent_id = Some("a1".into());
    let issue = new_job(cert.id, JobKind::Issue);
    store.create_certificate(&cert, &issue).await.unwrap();
    create(&store, "unbound.internal").await;

    let bound = store.agent_certificates("a1").await.unwrap();
    assert_eq!(bound.len(), 1, "only the agent's certificate");
    assert_eq!(bound[0].1, Some(issue.id));
    assert!(bound[0].0.awaits_agent_csr());

    // A worker finds no CSR and defers the job; the CSR's arrival makes it runnable at once.
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 10).await.unwrap();
    let ours = claimed.iter().find(|c| c.job.id == issue.id).unwrap().clone();
    assert!(
        store.submit_agent_csr(cert.id, "CSR-1", now()).await.unwrap().is_none(),
        "a running job takes no CSR"
    );
    let later = now() + Duration::minutes(1);
    assert!(store.defer_job("w1", &ours, "waiting", later, now()).await.unwrap());
    let job = store.submit_agent_csr(cert.id, "CSR-1", now()).await.unwrap().unwrap();
    assert_eq!((job.id, job.run_after, job.last_error), (issue.id, now(), None));
    let stored = store.certificate(cert.id).await.unwrap().unwrap();
    assert_eq!(stored.csr_pem.as_deref(), Some("CSR-1"));
    assert!(!stored.awaits_agent_csr());

    // Issuance consumes the CSR: the next version needs a new one (a fresh key).
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 10).await.unwrap();
    let ours = claimed.into_iter().find(|c| c.job.id == issue.id).unwrap();
    let completion = Completion {
        claimed: ours,
        version: version("0a"),
        renew_at: now() + Duration::days(60),
    };
    assert_eq!(
        store.complete_jobs("w1", &[completion], now()).await.unwrap(),
        vec![Some(1)]
    );
    let stored = store.certificate(cert.id).await.unwrap().unwrap();
    assert_eq!((stored.current_version, stored.csr_pem), (1, None));
    assert_eq!(
        store.agent_certificates("a1").await.unwrap()[0].1,
        None,
        "no job in flight"
    );

    // A deployment is a finished job of its own, beside the issuance.
    let mut deployment = new_job(cert.id, JobKind::Deploy);
    deployment.state = JobState::Failed;
    deployment.last_error = Some("nginx -t failed".into());
    deployment.finished_at = Some(now());
    let event = NewEvent {
        kind: EventKind::DeploymentFailed,
        dedup_key: None,
        certificate_id: Some(cert.id),
        subject: Some("a1".into()),
        payload: serde_json::json!({"error": "nginx -t failed"}),
        at: now(),
    };
    store.record_deployment(&deployment, &event).await.unwrap();
    let events = store.unrouted_events(10).await.unwrap();
    assert_eq!(events.last().map(|e| e.kind), Some(EventKind::DeploymentFailed));
    let recorded = store.job(deployment.id).await.unwrap().unwrap();
    assert_eq!(
        (recorded.kind, recorded.state, recorded.last_error.as_deref()),
        (JobKind::Deploy, JobState::Failed, Some("nginx -t failed"))
    );
    assert!(store.active_job(cert.id).await.unwrap().is_none());
}

async fn events_route_to_notifications_that_retry_die_and_requeue(store: Store) {
    with_issuer(&store).await;
    let mut cert = new_certificate("n.internal");
    cert.expiry_thresholds = Some(ExpiryThresholds::new(vec![7, 0]).unwrap());
    store
        .create_certificate(&cert, &new_job(cert.id, JobKind::Issue))
        .await
        .unwrap();
    // A failed attempt and the issuance are events written with them.
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 1).await.unwrap();
    let problem = r#"{"type":"urn:ietf:params:acme:error:dns","detail":"NXDOMAIN"}"#;
    store
        .fail_job("w1", &claimed[0], "dns: NXDOMAIN", Some(problem), Some(now()), now())
        .await
        .unwrap();
    let claimed = store.claim_jobs("w1", now(), Duration::minutes(1), 1).await.unwrap();
    let renew_at = now() + Duration::days(60);
    let completion = Completion {
        claimed: claimed[0].clone(),
        version: version("n1"),
        renew_at,
    };
    store.complete_jobs("w1", &[completion], now()).await.unwrap();
    let events = store.unrouted_events(10).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::IssuanceFailed, EventKind::Issued]);
    // The new version expires 90 days on: the 91st day of the dashboard's count.
    let per_day = store.expiries_per_day(now(), 91).await.unwrap();
    assert_eq!((per_day[90], per_day.iter().sum::<u64>()), (1, 1));
    assert_eq!(events[0].payload["problem"]["detail"], "NXDOMAIN");
    assert_eq!(events[1].payload["version"], 1);

    // Deduplicated: the same key twice is one event.
    let again = NewEvent {
        kind: EventKind::AgentOffline,
        dedup_key: Some("agent_offline:a:1".into()),
        certificate_id: None,
        subject: Some("a".into()),
        payload: serde_json::json!({}),
        at: now(),
    };
    assert_eq!(store.record_events(&[again.clone(), again.clone()]).await.unwrap(), 1);
    assert_eq!(store.record_events(&[again]).await.unwrap(), 0);

    // Routing makes one notification per notifier, once.
    let route = |event: &ck_store::EventRecord, payload: serde_json::Value, notifiers: &[&str]| RouteDecision {
        event_id: event.id.clone(),
        payload,
        notifiers: notifiers.iter().map(|n| (*n).to_owned()).collect(),
    };
    let first = route(&events[0], serde_json::json!({"routed": true}), &["hook", "mail"]);
    let again = route(&events[0], serde_json::json!({}), &["hook", "mail"]);
    store.route_events(&[first, again], now()).await.unwrap();
    let rest: Vec<RouteDecision> = store
        .unrouted_events(10)
        .await
        .unwrap()
        .iter()
        .map(|event| route(event, event.payload.clone(), &[]))
        .collect();
    store.route_events(&rest, now()).await.unwrap();
    assert!(store.unrouted_events(10).await.unwrap().is_empty());

    // Claims count attempts; a retry waits; a stale claim cannot finish; the last attempt dies.
    let lease = Duration::seconds(30);
    let claimed = store.claim_notifications("n1", now(), lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].event.payload["routed"], true);
    assert!(
        store
            .claim_notifications("n2", now(), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let (hook, mail) = if claimed[0].notifier == "hook" {
        (&claimed[0], &claimed[1])
    } else {
        (&claimed[1], &claimed[0])
    };
    let retry_at = now() + Duration::seconds(5);
    let retry = DeliveryOutcome::Retry {
        error: "answered 500".into(),
        at: retry_at,
    };
    let finished = store
        .finish_notifications("n1", &[(mail, DeliveryOutcome::Delivered), (hook, retry)], now())
        .await
        .unwrap();
    assert_eq!(finished, vec![true, true]);
    assert!(
        store
            .claim_notifications("n1", now(), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let second = store.claim_notifications("n2", retry_at, lease, 10).await.unwrap();
    assert_eq!((second.len(), second[0].attempts), (1, 2));
    let stale = store
        .finish_notifications("n1", &[(hook, DeliveryOutcome::Delivered)], now())
        .await
        .unwrap();
    assert_eq!(stale, vec![false], "stale claim");
    // A sender that died: its lease runs out and another node takes the notification.
    let third = store
        .claim_notifications("n3", retry_at + lease + Duration::seconds(1), lease, 10)
        .await
        .unwrap();
    assert_eq!((third.len(), third[0].attempts), (1, 3));
    let dead = DeliveryOutcome::Dead {
        error: "answered 500".into(),
    };
    assert_eq!(
        store
            .finish_notifications("n3", &[(&third[0], dead)], now())
            .await
            .unwrap(),
        vec![true]
    );
    let dead_filter = NotificationFilter {
        state: Some(NotificationState::Dead),
        limit: 10,
        ..NotificationFilter::default()
    };
    let (dead, more) = store.notifications(&dead_filter).await.unwrap();
    assert_eq!((dead.len(), more), (1, false));
    assert_eq!(
        (
            dead[0].notifier.as_str(),
            dead[0].last_error.as_deref(),
            dead[0].event.kind
        ),
        ("hook", Some("answered 500"), EventKind::IssuanceFailed)
    );
    let counts = store.notification_counts().await.unwrap();
    assert!(counts.contains(&("hook".to_owned(), "dead".to_owned(), 1)));
    assert!(counts.contains(&("mail".to_owned(), "delivered".to_owned(), 1)));
    assert!(matches!(
        store.requeue_notification(&mail.id, now()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.requeue_notification("nope", now()).await,
        Err(StoreError::NotFound)
    ));
    let requeued = store.requeue_notification(&dead[0].id, now()).await.unwrap();
    assert_eq!((requeued.state, requeued.attempts), (NotificationState::Pending, 0));
    assert_eq!(
        store.claim_notifications("n1", now(), lease, 10).await.unwrap().len(),
        1
    );

    // Expiry: only overdue certificates are candidates; a crossing sets the status and the
    // announced threshold for this version only, and a new version starts over.
    assert!(store.overdue_certificates(now(), 10).await.unwrap().is_empty());
    let late = renew_at + Duration::days(25);
    let overdue = store.overdue_certificates(late, 10).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!((overdue[0].version, overdue[0].alerted_days), (1, None));
    assert_eq!(
        overdue[0].thresholds.as_ref().map(|t| t.days().to_vec()),
        Some(vec![7, 0])
    );
    store.record_threshold_crossing(cert.id, 1, 7, &[], late).await.unwrap();
    let stored = store.certificate(cert.id).await.unwrap().unwrap();
    assert_eq!(stored.status, CertificateStatus::Expiring);
    assert_eq!(
        store.overdue_certificates(late, 10).await.unwrap()[0].alerted_days,
        Some(7)
    );
    store.record_threshold_crossing(cert.id, 1, 0, &[], late).await.unwrap();
    assert_eq!(
        store.certificate(cert.id).await.unwrap().unwrap().status,
        CertificateStatus::Expired
    );
    assert!(
        store.overdue_certificates(late, 10).await.unwrap().is_empty(),
        "nothing left to announce"
    );
    // The stale version's crossing is ignored once a renewal landed.
    store.enqueue(&new_job(cert.id, JobKind::Renew)).await.unwrap();
    let claimed = store.claim_jobs("w1", late, Duration::minutes(1), 1).await.unwrap();
    let completion = Completion {
        claimed: claimed[0].clone(),
        version: version("n2"),
        renew_at: late + Duration::days(60),
    };
    store.complete_jobs("w1", &[completion], late).await.unwrap();
    store.record_threshold_crossing(cert.id, 1, 0, &[], late).await.unwrap();
    let renewed = store.certificate(cert.id).await.unwrap().unwrap();
    assert_eq!(
        (renewed.status, renewed.current_version),
        (CertificateStatus::Active, 2)
    );

    // A renewal that fails for good cools the certificate down before the next job, and its
    // failures are one renewal_failed event per version and day.
    let due_at = late + Duration::days(61);
    store.enqueue(&new_job(cert.id, JobKind::Renew)).await.unwrap();
    for _ in 0..2 {
        let claimed = store.claim_jobs("w1", due_at, Duration::minutes(1), 1).await.unwrap();
        store
            .fail_job("w1", &claimed[0], "CA down", None, Some(due_at), due_at)
            .await
            .unwrap();
    }
    let claimed = store.claim_jobs("w1", due_at, Duration::minutes(1), 1).await.unwrap();
    store
        .fail_job("w1", &claimed[0], "CA down", None, None, due_at)
        .await
        .unwrap();
    let cooldown = Duration::minutes(15);
    assert!(store.due_for_renewal(due_at, cooldown, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .due_for_renewal(due_at + Duration::minutes(16), cooldown, 10)
            .await
            .unwrap(),
        vec![cert.id]
    );
    let failures: Vec<_> = store
        .unrouted_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::RenewalFailed)
        .collect();
    assert_eq!(failures.len(), 1, "three failed attempts on one day are one notice");

    // Pruning forgets finished notifications and their events, never unfinished ones.
    assert_eq!(store.prune_events(now()).await.unwrap(), 0, "nothing is that old");
    let far = late + Duration::days(365);
    store.prune_events(far).await.unwrap();
    let (left, _) = store
        .notifications(&NotificationFilter {
            limit: 100,
            ..NotificationFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the requeued one is still being sent: {left:?}");
    assert_eq!(left[0].state, NotificationState::Sending);
    // A restarted sender takes its claims back at once.
    assert_eq!(store.release_notifications_of("elsewhere", now()).await.unwrap(), 0);
    assert_eq!(store.release_notifications_of("n1", now()).await.unwrap(), 1);
    assert_eq!(
        store.claim_notifications("n1", now(), lease, 10).await.unwrap().len(),
        1
    );
}

async fn certificates_search_sort_page_and_count(store: Store) {
    with_issuer(&store).await;
    // Display names may hold LIKE's wildcards; the SANs stay valid DNS names.
    for (i, name) in [
        "Zeta.internal",
        "alpha.internal",
        "beta_1.internal",
        "beta-2.internal",
        "100%.internal",
    ]
    .into_iter()
    .enumerate()
    {
        let mut cert = new_certificate(&format!("host{i}.example"));
        cert.name = name.to_owned();
        store
            .create_certificate(&cert, &new_job(cert.id, JobKind::Issue))
            .await
            .unwrap();
    }
    let filter = |search: &str, order: ck_store::CertificateOrder, offset: u32, limit: u32| CertificateFilter {
        search: Some(search.to_owned()),
        order,
        offset,
        limit,
        ..CertificateFilter::default()
    };
    let names = |page: ck_store::CertificatePage| page.items.into_iter().map(|c| c.name).collect::<Vec<_>>();
    use ck_store::CertificateOrder::{Created, Name};
    // Any case; LIKE's wildcards are literal.
    let zeta = store.certificates(&filter("ZETA", Name, 0, 10), now()).await.unwrap();
    assert_eq!(names(zeta), vec!["Zeta.internal"]);
    let underscore = store.certificates(&filter("beta_", Name, 0, 10), now()).await.unwrap();
    assert_eq!(names(underscore), vec!["beta_1.internal"]);
    let percent = store.certificates(&filter("0%", Name, 0, 10), now()).await.unwrap();
    assert_eq!(names(percent), vec!["100%.internal"]);
    // Sorted by name and paged by offset; the count ignores the page.
    let first = store
        .certificates(&filter("internal", Name, 0, 2), now())
        .await
        .unwrap();
    assert!(first.more);
    assert_eq!(names(first), vec!["100%.internal", "Zeta.internal"]);
    let second = store
        .certificates(&filter("internal", Name, 2, 2), now())
        .await
        .unwrap();
    assert_eq!(names(second), vec!["alpha.internal", "beta-2.internal"]);
    let created = store
        .certificates(&filter("beta", Created, 0, 10), now())
        .await
        .unwrap();
    assert_eq!(names(created), vec!["beta_1.internal", "beta-2.internal"]);
    assert_eq!(
        store
            .count_certificates(&filter("internal", Name, 4, 1), now())
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .count_certificates(&filter("nothing", Name, 0, 1), now())
            .await
            .unwrap(),
        0
    );
}

fn audit_record(action: &str) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        at: now(),
        actor: "token:admin".into(),
        action: action.into(),
        resource: Some("certificate/x".into()),
        request_id: Some("r1".into()),
        outcome: "success".into(),
        status: Some(201),
        client: Some("127.0.0.1".into()),
        body_sha256: Some("ab".repeat(32)),
        detail: None,
    }
}

/// Appends, filters and pages audit events, then tries to change them behind the store's back
/// with plain SQL: both engines refuse.
async fn audit_is_append_only(store: Store, raw: &mut sqlx::AnyConnection) {
    let events: Vec<AuditRecord> = ["certificate.create", "certificate.revoke", "token.create"]
        .iter()
        .map(|a| audit_record(a))
        .collect();
    store.append_audit(&events).await.unwrap();
    let page = |action: Option<&str>, cursor: Option<String>, limit| AuditFilter {
        action: action.map(str::to_owned),
        cursor,
        limit,
        ..AuditFilter::default()
    };
    let (certs, _) = store.audit_events(&page(Some("certificate."), None, 10)).await.unwrap();
    assert_eq!(certs.len(), 2);
    let (first, more) = store.audit_events(&page(None, None, 2)).await.unwrap();
    assert!(more);
    let (rest, more) = store
        .audit_events(&page(None, Some(first[1].id.clone()), 2))
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(rest, [events[2].clone()]);
    assert_eq!(first, events[..2]);

    use sqlx::Executor;
    for tamper in [
        "UPDATE audit_events SET actor = 'someone-else'",
        "DELETE FROM audit_events",
    ] {
        let error = raw.execute(tamper).await.expect_err(tamper);
        assert!(error.to_string().contains("append-only"), "{tamper}: {error}");
    }
    let (all, _) = store.audit_events(&page(None, None, 10)).await.unwrap();
    assert_eq!(all, events, "nothing changed");
}

#[tokio::test]
async fn sqlite_audit_is_append_only() {
    use sqlx::Connection;
    let (store, dir) = sqlite_store().await;
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut raw = sqlx::AnyConnection::connect(&url).await.unwrap();
    audit_is_append_only(store, &mut raw).await;
}

#[tokio::test]
async fn postgres_audit_is_append_only() {
    use sqlx::Connection;
    let Some(url) = postgres_database().await else { return };
    let store = Store::connect(&url, cipher()).await.unwrap();
    let mut raw = sqlx::AnyConnection::connect(url.expose()).await.unwrap();
    audit_is_append_only(store, &mut raw).await;
    // TRUNCATE skips row triggers; the statement trigger catches it.
    use sqlx::Executor;
    let error = raw.execute("TRUNCATE audit_events").await.unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

/// Secret columns hold ciphertext bound to their column; a rotation moves every value to the
/// new key in one pass; plain values of earlier versions are encrypted by the same pass.
async fn secrets_are_encrypted_at_rest(url: DatabaseUrl, raw: &mut sqlx::AnyConnection) {
    use sqlx::{Executor, Row};
    let old = Kek::generate().unwrap();
    let store = Store::connect(&url, SecretCipher::new(old.clone())).await.unwrap();
    let issuer = IssuerRecord {
        id: "local".into(),
        kind: "local".into(),
        root_cert_pem: Some("root cert".into()),
        root_key_pem: Some("ROOT-KEY-CANARY".into()),
        intermediate_cert_pem: Some("int cert".into()),
        intermediate_key_pem: Some("INT-KEY-CANARY".into()),
        settings: Some(r#"{"eab":{"hmac":"EAB-CANARY"}}"#.into()),
        account_credentials: None,
        account_url: None,
        health: None,
        created_at: now(),
    };
    store.insert_issuer_if_absent(&issuer).await.unwrap();
    store
        .set_issuer_account("local", Some("ACCOUNT-KEY-CANARY"), Some("https://ca/acct/1"))
        .await
        .unwrap();
    let dump = |rows: Vec<sqlx::any::AnyRow>| -> String {
        rows.iter()
            .map(|r| {
                (0..4)
                    .map(|i| r.try_get::<Option<String>, _>(i).unwrap().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let select = "SELECT root_key_pem, intermediate_key_pem, settings, account_credentials FROM issuers";
    let stored = dump(raw.fetch_all(select).await.unwrap());
    assert!(!stored.contains("CANARY"), "plaintext in the table: {stored}");
    assert_eq!(
        stored.matches(&format!("ckenc:v2:{}:", old.id())).count(),
        4,
        "{stored}"
    );
    let read = store.issuer("local").await.unwrap().unwrap();
    assert_eq!(read.root_key_pem.as_deref(), Some("ROOT-KEY-CANARY"));
    assert_eq!(read.settings, issuer.settings);
    assert_eq!(read.account_credentials.as_deref(), Some("ACCOUNT-KEY-CANARY"));
    // Unchanged settings stay unchanged (each encryption differs, the comparison must not).
    assert!(
        !store
            .upsert_issuer_settings("local", "local", issuer.settings.as_deref().unwrap(), now())
            .await
            .unwrap()
    );

    // A ciphertext moved to another column does not decrypt there.
    raw.execute("UPDATE issuers SET intermediate_key_pem = root_key_pem")
        .await
        .unwrap();
    let moved = store.issuer("local").await.unwrap_err();
    assert!(matches!(moved, StoreError::Secrets(_)), "{moved:?}");
    store
        .upsert_issuer_settings("other", "acme", "{}", now())
        .await
        .unwrap();
    // (Plaintext put into a sealed database is refused: tests/it/secrets.rs.)
    raw.execute("UPDATE issuers SET intermediate_key_pem = NULL WHERE id = 'local'")
        .await
        .unwrap();

    // Without the key, nothing decrypts; the error names the key id.
    let stranger = Store::connect(&url, SecretCipher::new(Kek::generate().unwrap()))
        .await
        .unwrap();
    let error = stranger.issuer("local").await.unwrap_err().to_string();
    assert!(error.contains(old.id()), "{error}");

    // Rotation: the new key is current, the old one decrypts; one pass rewraps everything.
    let new = Kek::generate().unwrap();
    let rotated = Store::connect(&url, SecretCipher::new(new.clone()).with_decrypt_only(old))
        .await
        .unwrap();
    assert_eq!(rotated.rewrap_secrets().await.unwrap(), 4);
    assert_eq!(rotated.rewrap_secrets().await.unwrap(), 0, "nothing left to do");
    let stored = dump(raw.fetch_all(select).await.unwrap());
    assert!(!stored.contains("CANARY"), "{stored}");
    let only_new = Store::connect(&url, SecretCipher::new(new)).await.unwrap();
    let read = only_new.issuer("local").await.unwrap().unwrap();
    assert_eq!(read.root_key_pem.as_deref(), Some("ROOT-KEY-CANARY"));
    assert_eq!(read.account_credentials.as_deref(), Some("ACCOUNT-KEY-CANARY"));
}

#[tokio::test]
async fn sqlite_secrets_are_encrypted_at_rest() {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("s.db"));
    // Creates the file and the schema before the raw connection opens it.
    Store::connect(&url, cipher()).await.unwrap();
    let mut raw = sqlx::AnyConnection::connect(url.expose()).await.unwrap();
    secrets_are_encrypted_at_rest(url, &mut raw).await;
}

#[tokio::test]
async fn postgres_secrets_are_encrypted_at_rest() {
    use sqlx::Connection;
    let Some(url) = postgres_database().await else { return };
    Store::connect(&url, cipher()).await.unwrap();
    let mut raw = sqlx::AnyConnection::connect(url.expose()).await.unwrap();
    secrets_are_encrypted_at_rest(url, &mut raw).await;
}
