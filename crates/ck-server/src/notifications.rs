//! Notifications: the expiry and agent scans that raise events, routing events to notifiers, and
//! the delivery loop with retries and dead-letter.
//!
//! Events are rows written with what they report (ck-store), so a crash between "it happened"
//! and "it was sent" loses nothing. Every node routes and delivers: a claim carries a lease and
//! the attempt number, so two nodes never send the same attempt, and a node that dies mid-send
//! leaves its claims to the others when the lease runs out (at least once, never silently lost).

use std::collections::HashMap;
use std::sync::Arc;

use ck_domain::{Certificate, EventKind};
use ck_notify::{DeliveryError, Message};
use ck_store::{DeliveryOutcome, EventRecord, NewEvent, NotificationFilter, NotificationRecord, RouteDecision};
use rand::Rng;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use ck_store::Store;
use tokio::sync::Notify;

use crate::access::auth::Principal;
use crate::access::tokens::require_unrestricted;
use crate::agents::{AgentStatus, status_of};
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::signals::Shutdown;
use crate::{ServerConfig, ServiceError, now};

/// Delivered and dead notifications, and their events, are kept this long (the API lists them).
const KEEP_FINISHED: Duration = Duration::days(90);
/// How long a claimed notification stays with its sender: longer than any notifier's timeout.
const DELIVERY_LEASE: Duration = Duration::minutes(5);
/// Notifications sent at once by one node.
const DELIVERY_BATCH: u32 = 32;

/// Notifications: events routed to notifiers, sent with retries and a dead-letter state, and
/// the scans that make events (expiry thresholds, silent agents). Cheap to clone.
#[derive(Clone)]
pub struct Notifications(Arc<NotificationsState>);

/// What [`Notifications`] holds, shared by its clones.
pub struct NotificationsState {
    store: Store,
    config: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
    cluster: Cluster,
    /// Wakes the notification loop (a requeue through the API).
    due: Arc<Notify>,
}

impl std::ops::Deref for Notifications {
    type Target = NotificationsState;

    fn deref(&self) -> &NotificationsState {
        &self.0
    }
}

impl Notifications {
    pub(crate) fn new(store: Store, config: Arc<ServerConfig>, metrics: Arc<Metrics>, cluster: Cluster) -> Self {
        Self(Arc::new(NotificationsState {
            store,
            config,
            metrics,
            cluster,
            due: Arc::default(),
        }))
    }

    /// Announces every expiry threshold crossed by `now` that was not announced yet (one event
    /// per certificate version and threshold) and moves the certificates to `expiring` or
    /// `expired`. Returns how many certificates crossed a threshold. The leader runs it after
    /// each renewal scan; `now` is an argument so tests can move time.
    pub async fn scan_expiry_thresholds(&self, now: OffsetDateTime) -> Result<usize, ServiceError> {
        let store = &self.store;
        let default = &self.config.notifications.expiry_thresholds;
        let mut crossed = 0;
        for cert in store.overdue_certificates(now, 10_000).await? {
            let thresholds = cert.thresholds.as_ref().unwrap_or(default);
            // Only the nearest new threshold is announced: a scan that runs late (the server was
            // stopped) says "expires in 1 day" once, not also "in 7 days" and "in 14 days".
            let Some(days) = thresholds
                .crossed(cert.not_after, cert.renew_at, now)
                .into_iter()
                .rfind(|&days| cert.alerted_days.is_none_or(|alerted| days < alerted))
            else {
                continue;
            };
            let event = NewEvent {
                kind: EventKind::ThresholdCrossed,
                dedup_key: Some(format!("threshold:{}:{}:{days}", cert.id, cert.version)),
                certificate_id: Some(cert.id),
                subject: None,
                payload: json!({
                    "version": cert.version,
                    "days": days,
                    "expired": days == 0,
                    "not_after": rfc3339(cert.not_after),
                    "renew_at": rfc3339(cert.renew_at),
                }),
                at: now,
            };
            store
                .record_threshold_crossing(cert.id, cert.version, days, &[event], now)
                .await?;
            tracing::warn!(certificate = %cert.id, name = %cert.name, version = cert.version, days,
                "certificate crossed an expiry threshold: its renewal is late");
            crossed += 1;
        }
        Ok(crossed)
    }

    /// Raises one `agent_offline` event per agent and silence (a heartbeat after it and a later
    /// silence make a new one). Returns how many were new.
    pub async fn scan_offline_agents(&self, now: OffsetDateTime) -> Result<u64, ServiceError> {
        let events: Vec<NewEvent> = self
            .store
            .agents()
            .await?
            .iter()
            .filter(|agent| status_of(agent, now) == AgentStatus::Offline)
            .filter_map(|agent| {
                let last_seen = agent.last_seen?;
                Some(NewEvent {
                    kind: EventKind::AgentOffline,
                    dedup_key: Some(format!(
                        "agent_offline:{}:{}",
                        agent.id,
                        last_seen.unix_timestamp_nanos() / 1_000_000
                    )),
                    certificate_id: None,
                    subject: Some(agent.id.clone()),
                    payload: json!({
                        "agent_id": agent.id,
                        "agent": agent.name,
                        "hostname": agent.facts.hostname,
                        "last_seen": rfc3339(last_seen),
                    }),
                    at: now,
                })
            })
            .collect();
        Ok(self.store.record_events(&events).await?)
    }

    /// Forgets notifications and events that finished more than 90 days before `now`.
    pub async fn prune_notifications(&self, now: OffsetDateTime) -> Result<u64, ServiceError> {
        Ok(self.store.prune_events(now - KEEP_FINISHED).await?)
    }

    /// Notifications, newest first, and whether more match (unrestricted operators only:
    /// they name every team's certificates).
    pub async fn notifications(
        &self,
        caller: &Principal,
        filter: &NotificationFilter,
    ) -> Result<(Vec<NotificationRecord>, bool), ServiceError> {
        require_unrestricted(caller, "the notification queue")?;
        Ok(self.store.notifications(filter).await?)
    }

    /// One notification.
    pub async fn notification(&self, caller: &Principal, id: &str) -> Result<NotificationRecord, ServiceError> {
        require_unrestricted(caller, "the notification queue")?;
        self.store
            .notification(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("notification {id}")))
    }

    /// Puts a dead notification back in the queue with a fresh attempt budget.
    pub async fn requeue_notification(&self, caller: &Principal, id: &str) -> Result<NotificationRecord, ServiceError> {
        require_unrestricted(caller, "the notification queue")?;
        let record = self.store.requeue_notification(id, now()).await?;
        self.due.notify_one();
        Ok(record)
    }

    /// Routes new events and sends what is due, once (the loop calls it; tests call it too).
    pub async fn deliver_notifications(&self) -> Result<(), ServiceError> {
        self.route_events().await?;
        while self.send_due_notifications().await? == DELIVERY_BATCH as usize {}
        Ok(())
    }

    async fn route_events(&self) -> Result<(), ServiceError> {
        let store = &self.store;
        let entries = &self.config.notifications.notifiers;
        loop {
            let events = store.unrouted_events(200).await?;
            if events.is_empty() {
                return Ok(());
            }
            let mut certificates: HashMap<ck_domain::CertificateId, Option<Certificate>> = HashMap::new();
            let mut decisions = Vec::with_capacity(events.len());
            for event in &events {
                // Only an event some notifier may want needs its certificate and a document.
                let wanted = entries
                    .iter()
                    .any(|entry| entry.route.events.is_empty() || entry.route.events.contains(&event.kind));
                if !wanted {
                    decisions.push(RouteDecision {
                        event_id: event.id.clone(),
                        payload: Value::Null,
                        notifiers: Vec::new(),
                    });
                    continue;
                }
                let cert = match event.certificate_id {
                    Some(id) => match certificates.get(&id) {
                        Some(cert) => cert.clone(),
                        None => {
                            let cert = store.certificate(id).await?;
                            certificates.insert(id, cert.clone());
                            cert
                        }
                    },
                    None => None,
                };
                decisions.push(RouteDecision {
                    event_id: event.id.clone(),
                    payload: compose(event, cert.as_ref()),
                    notifiers: entries
                        .iter()
                        .filter(|entry| entry.route.accepts(event.kind, cert.as_ref().map(|c| &c.labels)))
                        .map(|entry| entry.name.clone())
                        .collect(),
                });
            }
            store.route_events(&decisions, now()).await?;
        }
    }

    /// Sends one batch of due notifications concurrently; returns how many were claimed.
    async fn send_due_notifications(&self) -> Result<usize, ServiceError> {
        let owner = self.config.node_id.clone();
        let claimed = self
            .store
            .claim_notifications(&owner, now(), DELIVERY_LEASE, DELIVERY_BATCH)
            .await?;
        let count = claimed.len();
        let mut sends = tokio::task::JoinSet::new();
        for record in claimed {
            let entry = self
                .config
                .notifications
                .notifiers
                .iter()
                .find(|entry| entry.name == record.notifier)
                .cloned();
            sends.spawn(async move {
                let outcome = match entry {
                    Some(entry) => entry.notifier.deliver(&message(&record)).await,
                    None => Err(DeliveryError::Permanent(format!(
                        "notifier {:?} is not configured (any more)",
                        record.notifier
                    ))),
                };
                (record, outcome)
            });
        }
        let mut finished = Vec::with_capacity(count);
        while let Some(joined) = sends.join_next().await {
            // A send that panicked leaves its claim to expire: it is tried again after the lease.
            if let Ok((record, outcome)) = joined {
                let outcome = self.judge_delivery(&record, outcome);
                finished.push((record, outcome));
            }
        }
        let outcomes: Vec<_> = finished
            .iter()
            .map(|(record, outcome)| (record, outcome.clone()))
            .collect();
        self.store.finish_notifications(&owner, &outcomes, now()).await?;
        Ok(count)
    }

    /// What an attempt's result means for its notification: delivered, another try later
    /// (transient, attempts left), or dead; logged and counted here.
    fn judge_delivery(&self, record: &NotificationRecord, outcome: Result<(), DeliveryError>) -> DeliveryOutcome {
        let judged = match outcome {
            Ok(()) => {
                tracing::info!(notifier = %record.notifier, event = %record.event.kind, id = %record.id,
                    attempts = record.attempts, "notification delivered");
                DeliveryOutcome::Delivered
            }
            Err(error) => {
                let retry_at = match &error {
                    DeliveryError::Transient(_) => self
                        .config
                        .notifications
                        .retry
                        .next_delay(record.attempts, rand::rng().random::<f64>())
                        .map(|delay| now() + delay),
                    DeliveryError::Permanent(_) => None,
                };
                match retry_at {
                    Some(at) => {
                        tracing::warn!(notifier = %record.notifier, event = %record.event.kind, id = %record.id,
                            attempts = record.attempts, %error, retry_at = %at, "notification failed; will retry");
                        DeliveryOutcome::Retry {
                            error: error.to_string(),
                            at,
                        }
                    }
                    None => {
                        tracing::error!(notifier = %record.notifier, event = %record.event.kind, id = %record.id,
                            attempts = record.attempts, %error,
                            "notification given up (dead-letter); requeue it through the API");
                        DeliveryOutcome::Dead {
                            error: error.to_string(),
                        }
                    }
                }
            }
        };
        let label = match judged {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry { .. } => "retry",
            DeliveryOutcome::Dead { .. } => "dead",
        };
        self.metrics.notification_attempt(&record.notifier, label);
        judged
    }
}

/// Routes and sends on every node until shutdown: each poll interval, and at once when a local
/// requeue asks. Pauses while the database is down.
pub(crate) async fn notification_loop(notifications: Notifications, mut shutdown: Shutdown) {
    let interval = notifications.config.notifications.poll_interval;
    loop {
        if notifications.cluster.database_reachable()
            && let Err(error) = notifications.deliver_notifications().await
        {
            tracing::warn!(%error, "notification pass failed; trying again next interval");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = notifications.due.notified() => {}
            () = shutdown.requested() => return,
        }
    }
}

/// The document a notifier receives: the event's own details under `details`, the certificate
/// as it is now, and a subject and text for people.
fn compose(event: &EventRecord, cert: Option<&Certificate>) -> Value {
    let details = &event.payload;
    let name = cert.map_or_else(
        || event.certificate_id.map(|id| id.to_string()).unwrap_or_default(),
        |c| c.name.clone(),
    );
    let text_of = |key: &str| details.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let version = details.get("version").and_then(Value::as_u64).unwrap_or(0);
    let problem_detail = details
        .get("problem")
        .and_then(|p| p.get("detail"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let subject_name = event.subject.clone().unwrap_or_default();
    let (subject, mut lines) = match event.kind {
        EventKind::Issued => (
            format!("{name} issued (version {version})"),
            vec![format!("Valid until {}.", text_of("not_after"))],
        ),
        EventKind::Renewed => (
            format!("{name} renewed (version {version})"),
            vec![format!(
                "Valid until {}; next renewal {}.",
                text_of("not_after"),
                text_of("renew_at")
            )],
        ),
        EventKind::IssuanceFailed | EventKind::RenewalFailed => {
            let what = if event.kind == EventKind::RenewalFailed {
                "renewal"
            } else {
                "issuance"
            };
            let mut lines = vec![format!("Error: {}", text_of("error"))];
            if let Some(detail) = problem_detail {
                lines.push(format!("The CA said: {detail}"));
            }
            lines.push(match details.get("will_retry_at").and_then(Value::as_str) {
                Some(at) => format!("certkeeper retries at {at}."),
                None => "certkeeper gave up on this attempt; the next renewal scan tries again.".to_owned(),
            });
            (format!("{what} of {name} failed"), lines)
        }
        EventKind::Revoked => (
            format!("{name} revoked ({})", text_of("reason")),
            vec![format!("Serial {}.", text_of("serial"))],
        ),
        EventKind::Deployed => (
            format!("{name} version {version} deployed"),
            vec![format!("Agent {subject_name} deployed it to {}.", targets(details))],
        ),
        EventKind::DeploymentFailed => (
            format!("deployment of {name} failed"),
            vec![
                format!("Agent {subject_name} could not deploy it to {}.", targets(details)),
                format!("Error: {}", text_of("error")),
            ],
        ),
        EventKind::ThresholdCrossed => {
            let days = details.get("days").and_then(Value::as_u64).unwrap_or(0);
            let subject = if days == 0 {
                format!("{name} has expired")
            } else {
                format!("{name} expires in {days} day{}", if days == 1 { "" } else { "s" })
            };
            (
                subject,
                vec![
                    format!(
                        "Version {version} expires at {}; its renewal was due at {}.",
                        text_of("not_after"),
                        text_of("renew_at")
                    ),
                    "Look at the certificate's jobs for the renewal error.".to_owned(),
                ],
            )
        }
        EventKind::IssuerUnhealthy => (
            format!("issuer {subject_name} is unhealthy"),
            vec![format!("Check: {}", text_of("detail"))],
        ),
        EventKind::AgentOffline => (
            format!("agent {} is offline", text_of("agent")),
            vec![format!(
                "No heartbeat from {} since {}.",
                text_of("hostname"),
                text_of("last_seen")
            )],
        ),
    };
    if let Some(cert) = cert {
        lines.push(format!(
            "Certificate {} ({}), issuer {}, names {}.",
            cert.name,
            cert.id,
            cert.issuer_id,
            cert.sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    json!({
        "subject": format!("certkeeper: {subject}"),
        "text": lines.join("\n"),
        "event": event.kind.as_str(),
        "occurred_at": rfc3339(event.created_at),
        "certificate": cert.map(|c| json!({
            "id": c.id.to_string(),
            "name": c.name,
            "common_name": c.common_name,
            "sans": c.sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "issuer": c.issuer_id.to_string(),
            "labels": c.labels.as_map(),
            "current_version": c.current_version,
            "not_after": c.not_after.map(rfc3339),
        })),
        "details": details,
    })
}

fn targets(details: &Value) -> String {
    details
        .get("targets")
        .and_then(Value::as_array)
        .map(|targets| targets.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// The message of a routed notification (its event's payload holds the composed document).
fn message(record: &NotificationRecord) -> Message {
    let payload = &record.event.payload;
    let text = |key: &str| payload.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    Message {
        id: record.id.clone(),
        event: record.event.kind,
        occurred_at: record.event.created_at,
        subject: text("subject"),
        text: text("text"),
        payload: payload.clone(),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
