//! `certkeeper-bench notifications`: what the notification outbox costs. The same signed
//! webhook notifier delivers N messages twice to a receiver in this process on 127.0.0.1: once
//! called directly (the channel's own rate, the baseline), once through the control plane
//! (events stored, routed, claimed with a lease, sent, recorded as delivered).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ck_domain::EventKind;
use ck_notify::Message;
use ck_store::NewEvent;
use serde::Serialize;

use crate::figures::Output;
use crate::server::database_url;

/// `certkeeper-bench notifications`.
#[derive(Debug, clap::Args)]
pub(crate) struct NotificationsArgs {
    /// Database to measure: sqlite (a temp file) or a postgres:// URL (an empty database per run:
    /// give a URL whose database is empty).
    #[arg(long, default_value = "sqlite")]
    pub(crate) database: String,
    /// Notifications to deliver (1 to 200000).
    #[arg(long, default_value_t = 5000)]
    pub(crate) count: usize,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Serialize)]
struct Report {
    database: String,
    count: usize,
    direct_per_second: f64,
    routed_events_per_second: f64,
    delivered_per_second: f64,
    ratio_to_direct: f64,
}

pub(crate) async fn run(args: NotificationsArgs) -> anyhow::Result<()> {
    if !(1..=200_000).contains(&args.count) {
        bail!("--count must be 1..=200000");
    }
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let yaml = format!("type: webhook\nurl: '{url}'\nsecret: bench-secret\n");
    let config: ck_notify::NotifierConfig = yaml_serde::from_str(&yaml)?;
    let notifier = Arc::new(config.build().map_err(|e| anyhow::anyhow!("{e}"))?);

    // Baseline: the notifier called directly, 32 at a time like the delivery loop.
    eprintln!("delivering {} messages directly…", args.count);
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..args.count {
        if sends.len() >= 32
            && let Some(joined) = sends.join_next().await
        {
            joined??;
        }
        let notifier = notifier.clone();
        sends.spawn(async move { notifier.deliver(&message(i)).await });
    }
    while let Some(joined) = sends.join_next().await {
        joined??;
    }
    let direct = started.elapsed();

    // Through the control plane.
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let entry = ck_server::NotifierEntry {
        name: "bench".into(),
        route: ck_domain::Route::default(),
        notifier,
    };
    let (backend, store, control_plane) = start_control_plane(&args.database, data_dir.path(), Some(entry)).await?;
    let events: Vec<NewEvent> = (0..args.count)
        .map(|i| NewEvent {
            kind: EventKind::AgentOffline,
            dedup_key: Some(format!("bench:{i}")),
            certificate_id: None,
            subject: Some(format!("agent-{i}")),
            payload: serde_json::json!({"agent": format!("agent-{i}"), "hostname": "bench", "last_seen": "now"}),
            at: ck_server::now(),
        })
        .collect();
    store.record_events(&events).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    received.store(0, Ordering::Relaxed);
    eprintln!(
        "delivering {} events through the control plane ({backend})…",
        args.count
    );
    let started = Instant::now();
    control_plane
        .notifications
        .deliver_notifications()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let through = started.elapsed();
    let delivered = received.load(Ordering::Relaxed);
    if delivered != args.count {
        bail!("the receiver got {delivered} of {} notifications", args.count);
    }
    receiver.abort();

    // Routing alone: the same events again, in a database of their own, routed to no notifier.
    let route_dir = tempfile::tempdir()?;
    let (_, route_store, router) = start_control_plane(&args.database, route_dir.path(), None).await?;
    let renamed: Vec<NewEvent> = events
        .into_iter()
        .map(|mut e| {
            e.dedup_key = e.dedup_key.map(|k| format!("{k}:route"));
            e
        })
        .collect();
    route_store
        .record_events(&renamed)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    router
        .notifications
        .deliver_notifications()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let routing = started.elapsed();

    let per_second = |d: Duration| args.count as f64 / d.as_secs_f64().max(1e-9);
    let report = Report {
        database: backend,
        count: args.count,
        direct_per_second: per_second(direct),
        routed_events_per_second: per_second(routing),
        delivered_per_second: per_second(through),
        ratio_to_direct: direct.as_secs_f64() / through.as_secs_f64().max(1e-9),
    };
    args.output.print(&report, print_text)
}

/// The figures as text.
fn print_text(report: &Report) {
    println!(
        "{} signed webhooks to 127.0.0.1 ({}): direct {:.0}/s; through the outbox {:.0}/s ({:.0}% of direct); \
         routing alone {:.0} events/s",
        report.count,
        report.database,
        report.direct_per_second,
        report.delivered_per_second,
        report.ratio_to_direct * 100.0,
        report.routed_events_per_second
    );
}

/// A control plane on `database` (`sqlite`: a file in `dir`) with at most one notifier.
async fn start_control_plane(
    database: &str,
    dir: &std::path::Path,
    notifier: Option<ck_server::NotifierEntry>,
) -> anyhow::Result<(String, ck_store::Store, ck_server::ControlPlane)> {
    let url = database_url(dir, database)?;
    let backend = url.backend().as_str().to_owned();
    let store = ck_store::Store::connect(&url, ck_secrets::SecretCipher::new(ck_secrets::Kek::generate()?))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = ck_server::ServerConfig::new("bench-node".to_owned());
    config.notifications.notifiers.extend(notifier);
    let (control_plane, _) = ck_server::bootstrap(store.clone(), config, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((backend, store, control_plane))
}

fn message(i: usize) -> Message {
    Message {
        id: format!("bench-{i}"),
        event: EventKind::AgentOffline,
        occurred_at: ck_server::now(),
        subject: format!("certkeeper: agent agent-{i} is offline"),
        text: "No heartbeat from bench since now.".to_owned(),
        payload: serde_json::json!({"agent": format!("agent-{i}")}),
    }
}
