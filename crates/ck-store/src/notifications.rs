//! Events and their notifications.
//!
//! An event is inserted in the transaction of what it reports, with a dedup key, so it is
//! neither lost nor doubled (`ON CONFLICT (dedup_key) DO NOTHING` on both engines). Routing
//! turns each event into one notification per interested notifier; notifications are claimed
//! with a lease like jobs, so a node that dies while sending leaves them to another.

use ck_domain::{CertificateId, EventKind, ExpiryThresholds};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::{Duration, OffsetDateTime};

use crate::rows::{ROWS_PER_STATEMENT, SqlValue, bind_all, from_ms, to_ms, values_list};
use crate::{Store, StoreError};

/// Something to report, written with what it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// Equal keys are one event: a second insert is ignored. `None`: always a new event.
    pub dedup_key: Option<String>,
    /// The certificate it is about.
    pub certificate_id: Option<CertificateId>,
    /// The issuer or agent it is about, when not a certificate.
    pub subject: Option<String>,
    /// The event's details, a JSON object.
    pub payload: serde_json::Value,
    /// When it happened.
    pub at: OffsetDateTime,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// UUIDv7.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// The certificate it is about.
    pub certificate_id: Option<CertificateId>,
    /// The issuer or agent it is about.
    pub subject: Option<String>,
    /// Its details.
    pub payload: serde_json::Value,
    /// When it happened.
    pub created_at: OffsetDateTime,
}

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Claimed by a node that is sending it.
    Sending,
    /// Accepted by its receiver.
    Delivered,
    /// Given up after its last attempt or a permanent refusal; requeue it through the API.
    Dead,
}

impl NotificationState {
    /// Every state.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Sending, Self::Delivered, Self::Dead];

    /// The name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }
}

impl std::str::FromStr for NotificationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown notification state '{s}' (expected pending, sending, delivered or dead)"))
    }
}

/// Where an event goes: its final payload and the notifiers that get it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDecision {
    /// The event.
    pub event_id: String,
    /// The document notifiers receive (kept as it was when no notifier wants the event).
    pub payload: serde_json::Value,
    /// The notifiers' names (none: the event is only marked routed).
    pub notifiers: Vec<String>,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver took it.
    Delivered,
    /// It failed; try again at `at`.
    Retry {
        /// Why it failed.
        error: String,
        /// The next attempt.
        at: OffsetDateTime,
    },
    /// It failed for good (last attempt, or a permanent refusal).
    Dead {
        /// Why.
        error: String,
    },
}

/// A notification with its event.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    /// UUIDv7; receivers see it as the delivery id.
    pub id: String,
    /// The notifier's configured name.
    pub notifier: String,
    /// Where it is.
    pub state: NotificationState,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt may run.
    pub next_attempt_at: OffsetDateTime,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<OffsetDateTime>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// What it reports.
    pub event: EventRecord,
}

/// Which notifications to list.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    /// Only this state.
    pub state: Option<NotificationState>,
    /// Only this notifier.
    pub notifier: Option<String>,
    /// Only events about this certificate.
    pub certificate_id: Option<CertificateId>,
    /// Only ids before this one (newest first).
    pub before: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// A certificate whose renewal is overdue, for the expiry scan.
#[derive(Debug, Clone, PartialEq)]
pub struct OverdueCertificate {
    /// The certificate.
    pub id: CertificateId,
    /// Its name.
    pub name: String,
    /// Its current version.
    pub version: u32,
    /// Its stored status (`active`, `expiring` or `expired`).
    pub status: String,
    /// The current version's expiry.
    pub not_after: OffsetDateTime,
    /// When its renewal became due.
    pub renew_at: OffsetDateTime,
    /// Its thresholds (`None`: the server's default).
    pub thresholds: Option<ExpiryThresholds>,
    /// The nearest threshold already announced for this version.
    pub alerted_days: Option<u32>,
}

const EVENT_COLUMNS: &str =
    "e.id AS event_id, e.kind, e.certificate_id, e.subject, e.payload, e.created_at AS event_at";
const NOTIFICATION_COLUMNS: &str = "n.id, n.notifier, n.state, n.attempts, n.next_attempt_at, n.last_error, \
     n.delivered_at, n.created_at, n.updated_at";

/// Inserts events in a transaction; those whose dedup key is known already are ignored.
pub(crate) async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    events: &[NewEvent],
) -> Result<u64, StoreError> {
    const COLUMNS: usize = 7;
    let mut inserted = 0;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<SqlValue> = Vec::with_capacity(chunk.len() * COLUMNS);
        for event in chunk {
            values.extend([
                uuid::Uuid::now_v7().to_string().into(),
                event.kind.as_str().into(),
                event.dedup_key.clone().into(),
                event.certificate_id.map(|id| id.to_string()).into(),
                event.subject.clone().into(),
                event.payload.to_string().into(),
                to_ms(event.at).into(),
            ]);
        }
        let statement = sql!(
            "INSERT INTO events (id, kind, dedup_key, certificate_id, subject, payload, created_at) VALUES {} \
             ON CONFLICT (dedup_key) DO NOTHING",
            values_list(chunk.len(), COLUMNS, 0)
        );
        inserted += bind_all(sqlx::query(statement), values)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(inserted)
}

impl Store {
    /// Records events on their own (expiry thresholds, issuer health, agents going offline).
    /// Returns how many were new.
    pub async fn record_events(&self, events: &[NewEvent]) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        let inserted = insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Events not routed yet, oldest first.
    pub async fn unrouted_events(&self, limit: u32) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(sql!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.routed_at IS NULL ORDER BY e.created_at, e.id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Routes events: stores each one's final payload and one pending notification per notifier
    /// that wants it, all in one transaction. Routing twice (two nodes) is harmless: the second
    /// finds the event routed.
    pub async fn route_events(&self, routes: &[RouteDecision], now: OffsetDateTime) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        // Events no notifier wants (the common case without notifiers) are only marked, together.
        let (unwanted, wanted): (Vec<&RouteDecision>, Vec<&RouteDecision>) =
            routes.iter().partition(|route| route.notifiers.is_empty());
        for chunk in unwanted.chunks(ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|n| format!("${n}")).collect();
            let sql = format!(
                "UPDATE events SET routed_at = $1 WHERE routed_at IS NULL AND id IN ({})",
                placeholders.join(", ")
            );
            let mut values: Vec<SqlValue> = vec![to_ms(now).into()];
            values.extend(chunk.iter().map(|route| SqlValue::from(route.event_id.as_str())));
            bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), values)
                .execute(&mut *tx)
                .await?;
        }
        for route in wanted {
            let routed =
                sqlx::query("UPDATE events SET routed_at = $1, payload = $2 WHERE id = $3 AND routed_at IS NULL")
                    .bind(to_ms(now))
                    .bind(route.payload.to_string())
                    .bind(&route.event_id)
                    .execute(&mut *tx)
                    .await?;
            if routed.rows_affected() == 0 {
                continue;
            }
            const COLUMNS: usize = 5;
            let mut values: Vec<SqlValue> = vec![to_ms(now).into()];
            for notifier in &route.notifiers {
                values.extend([
                    uuid::Uuid::now_v7().to_string().into(),
                    route.event_id.as_str().into(),
                    notifier.as_str().into(),
                    "pending".into(),
                    0_i64.into(),
                ]);
            }
            // `values_list` numbers from $2: $1 is the time shared by every row. SQLite needs the
            // `WHERE true` to tell the upsert's ON CONFLICT from a join's ON.
            let statement = sql!(
                "INSERT INTO notifications (id, event_id, notifier, state, attempts, next_attempt_at, created_at, \
                 updated_at) SELECT v.column1, v.column2, v.column3, v.column4, v.column5, $1, $1, $1 \
                 FROM (VALUES {}) AS v WHERE true ON CONFLICT (event_id, notifier) DO NOTHING",
                values_list(route.notifiers.len(), COLUMNS, 1)
            );
            bind_all(sqlx::query(statement), values).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` notifications that are due (or whose sender's lease ran out) for
    /// `owner`, counting the attempt.
    pub async fn claim_notifications(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let sql = format!(
            "UPDATE notifications SET state = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1, \
             updated_at = $3 WHERE id IN (SELECT id FROM notifications WHERE (state = 'pending' AND \
             next_attempt_at <= $3) OR (state = 'sending' AND lease_until < $3) ORDER BY next_attempt_at, id \
             LIMIT $4{}) RETURNING id",
            self.backend.skip_locked()
        );
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(to_ms(now + lease))
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.write)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS}, {EVENT_COLUMNS} FROM notifications n JOIN events e ON e.id = n.event_id \
             WHERE n.id IN ({}) ORDER BY n.next_attempt_at, n.id",
            placeholders.join(", ")
        );
        let values: Vec<SqlValue> = ids.into_iter().map(SqlValue::from).collect();
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), values)
            .fetch_all(&self.write)
            .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// Puts back every notification `owner` was sending when it stopped (a restarted node takes
    /// its own claims back at once instead of waiting for their leases). The interrupted attempt
    /// counts: it may have reached the receiver, which dedupes by delivery id. Returns how many.
    pub async fn release_notifications_of(&self, owner: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "UPDATE notifications SET state = 'pending', lease_owner = NULL, lease_until = NULL, \
             next_attempt_at = $2, updated_at = $2 WHERE state = 'sending' AND lease_owner = $1",
        )
        .bind(owner)
        .bind(to_ms(now))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected())
    }

    /// Records the outcomes of attempts by `owner`, in one transaction: delivered, retried at
    /// the given time, or dead (no retry time). Returns, per outcome, false when the claim was
    /// stale (another node took it over).
    pub async fn finish_notifications(
        &self,
        owner: &str,
        outcomes: &[(&NotificationRecord, DeliveryOutcome)],
        now: OffsetDateTime,
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.write.begin().await?;
        let mut current = Vec::with_capacity(outcomes.len());
        for (claimed, outcome) in outcomes {
            let (state, retry_at, error, delivered_at) = match outcome {
                DeliveryOutcome::Delivered => ("delivered", None, None, Some(to_ms(now))),
                DeliveryOutcome::Retry { error, at } => ("pending", Some(to_ms(*at)), Some(error.as_str()), None),
                DeliveryOutcome::Dead { error } => ("dead", None, Some(error.as_str()), None),
            };
            // A delivery keeps the last error: "delivered after 4 attempts, the last one failed so".
            let res = sqlx::query(
                "UPDATE notifications SET state = $1, next_attempt_at = COALESCE($2, next_attempt_at), \
                 last_error = COALESCE($3, last_error), delivered_at = $4, updated_at = $5, lease_owner = NULL, \
                 lease_until = NULL WHERE id = $6 AND lease_owner = $7 AND attempts = $8 AND state = 'sending'",
            )
            .bind(state)
            .bind(retry_at)
            .bind(error.map(str::to_owned))
            .bind(delivered_at)
            .bind(to_ms(now))
            .bind(&claimed.id)
            .bind(owner)
            .bind(i64::from(claimed.attempts))
            .execute(&mut *tx)
            .await?;
            current.push(res.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok(current)
    }

    /// One notification with its event.
    pub async fn notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
        let row = sqlx::query(sql!(
            "SELECT {NOTIFICATION_COLUMNS}, {EVENT_COLUMNS} FROM notifications n JOIN events e ON e.id = n.event_id \
             WHERE n.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        row.as_ref().map(notification_from_row).transpose()
    }

    /// Notifications, newest first, and whether more match.
    pub async fn notifications(
        &self,
        filter: &NotificationFilter,
    ) -> Result<(Vec<NotificationRecord>, bool), StoreError> {
        let mut sql = format!(
            "SELECT {NOTIFICATION_COLUMNS}, {EVENT_COLUMNS} FROM notifications n JOIN events e ON e.id = n.event_id \
             WHERE 1 = 1"
        );
        let mut binds: Vec<SqlValue> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, bind: SqlValue| {
            binds.push(bind);
            sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
        };
        if let Some(state) = filter.state {
            push(&mut sql, " AND n.state = $?", state.as_str().into());
        }
        if let Some(notifier) = &filter.notifier {
            push(&mut sql, " AND n.notifier = $?", notifier.as_str().into());
        }
        if let Some(certificate_id) = filter.certificate_id {
            push(
                &mut sql,
                " AND e.certificate_id = $?",
                certificate_id.to_string().into(),
            );
        }
        if let Some(before) = &filter.before {
            push(&mut sql, " AND n.id < $?", before.as_str().into());
        }
        let limit = filter.limit.clamp(1, 1000);
        push(&mut sql, " ORDER BY n.id DESC LIMIT $?", (i64::from(limit) + 1).into());
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.read)
            .await?;
        let mut records = rows.iter().map(notification_from_row).collect::<Result<Vec<_>, _>>()?;
        let more = records.len() > limit as usize;
        records.truncate(limit as usize);
        Ok((records, more))
    }

    /// Puts a dead notification back in the queue with a fresh attempt budget. `NotFound` for an
    /// unknown id, `Conflict` for one that is not dead.
    pub async fn requeue_notification(&self, id: &str, now: OffsetDateTime) -> Result<NotificationRecord, StoreError> {
        let res = sqlx::query(
            "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1 \
             WHERE id = $2 AND state = 'dead'",
        )
        .bind(to_ms(now))
        .bind(id)
        .execute(&self.write)
        .await?;
        let record = self.notification(id).await?.ok_or(StoreError::NotFound)?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "the notification is {}, not dead",
                record.state.as_str()
            )));
        }
        Ok(record)
    }

    /// Forgets what finished before `before`: delivered and dead notifications, and routed events
    /// with no notification left. Returns how many events went.
    pub async fn prune_events(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM notifications WHERE state IN ('delivered', 'dead') AND updated_at < $1")
            .bind(to_ms(before))
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query(
            "DELETE FROM events WHERE routed_at IS NOT NULL AND created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.event_id = events.id)",
        )
        .bind(to_ms(before))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone.rows_affected())
    }

    /// How many notifications are in each state, per notifier, for the metrics.
    pub async fn notification_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT notifier, state, COUNT(*) AS n FROM notifications GROUP BY notifier, state ORDER BY notifier, state",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("notifier")?, row.try_get("state")?, row.try_get("n")?)))
            .collect()
    }

    /// Certificates whose renewal was due by `now` and whose current version is still in use:
    /// the only ones that can have crossed an expiry threshold (every applicable threshold
    /// comes after the renewal time).
    pub async fn overdue_certificates(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OverdueCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, current_version, status, not_after, renew_at, expiry_thresholds, alerted_days \
             FROM certificates WHERE status IN ('active', 'expiring', 'expired') AND renew_at <= $1 \
             AND not_after IS NOT NULL AND (alerted_days IS NULL OR alerted_days > 0) ORDER BY renew_at LIMIT $2",
        )
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OverdueCertificate {
                    id: parse_id(row.try_get("id")?)?,
                    name: row.try_get("name")?,
                    version: u32_from(row.try_get("current_version")?)?,
                    status: row.try_get("status")?,
                    not_after: from_ms(row.try_get("not_after")?)?,
                    renew_at: from_ms(row.try_get("renew_at")?)?,
                    thresholds: row
                        .try_get::<Option<String>, _>("expiry_thresholds")?
                        .map(|text| ExpiryThresholds::from_text(&text).map_err(StoreError::Corrupt))
                        .transpose()?,
                    alerted_days: row
                        .try_get::<Option<i64>, _>("alerted_days")?
                        .map(u32_from)
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Records that `version` of a certificate crossed thresholds down to `days`: the events
    /// (deduplicated per version and threshold), the nearest threshold announced, and the status
    /// (`expired` at 0 days, `expiring` before), all in one transaction and only while that
    /// version is still the current one.
    pub async fn record_threshold_crossing(
        &self,
        id: CertificateId,
        version: u32,
        days: u32,
        events: &[NewEvent],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        let status = if days == 0 { "expired" } else { "expiring" };
        let res = sqlx::query(
            "UPDATE certificates SET alerted_days = $1, status = $2, updated_at = $3 WHERE id = $4 \
             AND current_version = $5 AND status IN ('active', 'expiring', 'expired')",
        )
        .bind(i64::from(days))
        .bind(status)
        .bind(to_ms(now))
        .bind(id.to_string())
        .bind(i64::from(version))
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 1 {
            insert_events(&mut tx, events).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A time as RFC 3339 text, for event payloads.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn parse_id(text: String) -> Result<CertificateId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("certificate id: {e}")))
}

fn u32_from(n: i64) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{n} is out of range")))
}

fn event_from_row(row: &AnyRow) -> Result<EventRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    let payload: String = row.try_get("payload")?;
    Ok(EventRecord {
        id: row.try_get("event_id")?,
        kind: kind
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("event kind: {e}")))?,
        certificate_id: row
            .try_get::<Option<String>, _>("certificate_id")?
            .map(parse_id)
            .transpose()?,
        subject: row.try_get("subject")?,
        payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
        created_at: from_ms(row.try_get("event_at")?)?,
    })
}

fn notification_from_row(row: &AnyRow) -> Result<NotificationRecord, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(NotificationRecord {
        id: row.try_get("id")?,
        notifier: row.try_get("notifier")?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        attempts: u32_from(row.try_get("attempts")?)?,
        next_attempt_at: from_ms(row.try_get("next_attempt_at")?)?,
        last_error: row.try_get("last_error")?,
        delivered_at: row
            .try_get::<Option<i64>, _>("delivered_at")?
            .map(from_ms)
            .transpose()?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
        event: event_from_row(row)?,
    })
}
