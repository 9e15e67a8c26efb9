//! The audit trail: rows are only inserted. There is deliberately no update or delete here, and
//! the migrations' triggers refuse both to anyone else.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::rows::{ROWS_PER_STATEMENT, SqlValue, bind_all, from_ms, to_ms, values_list};
use crate::{Store, StoreError};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// UUIDv7: time-ordered, also the cursor.
    pub id: String,
    /// When it happened.
    pub at: OffsetDateTime,
    /// `token:<name>`, `agent:<name>`, `system`, `anonymous`.
    pub actor: String,
    /// `certificate.create`, `certificate.issued`, `token.revoke`, `auth.failure`…
    pub action: String,
    /// `certificate/<id>`, `token/<id>`…
    pub resource: Option<String>,
    /// The API request that caused it.
    pub request_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// The HTTP status of an API call.
    pub status: Option<u16>,
    /// The client's address.
    pub client: Option<String>,
    /// Hex SHA-256 of the request body.
    pub body_sha256: Option<String>,
    /// A short, secret-free explanation (an error message).
    pub detail: Option<String>,
}

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exactly this actor.
    pub actor: Option<String>,
    /// This action, or every action under it when it ends with `.` (`certificate.`).
    pub action: Option<String>,
    /// Exactly this resource.
    pub resource: Option<String>,
    /// Exactly this outcome.
    pub outcome: Option<String>,
    /// At or after this time.
    pub since: Option<OffsetDateTime>,
    /// Before this time.
    pub until: Option<OffsetDateTime>,
    /// After this event id.
    pub cursor: Option<String>,
    /// At most this many (1..=10,000).
    pub limit: u32,
    /// The newest first (the cursor then pages backwards: ids before it).
    pub newest_first: bool,
}

const COLUMNS: &str = "id, at, actor, action, resource, request_id, outcome, status, client, body_sha256, detail";
const N_COLUMNS: usize = 11;

impl Store {
    /// Appends events in one transaction.
    pub async fn append_audit(&self, events: &[AuditRecord]) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        insert_audit(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events in time order, and whether more follow.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<(Vec<AuditRecord>, bool), StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_events WHERE 1 = 1");
        let mut binds: Vec<SqlValue> = Vec::new();
        let mut condition = |sql: &mut String, clause: &str, value: SqlValue| {
            binds.push(value);
            sql.push_str(&format!(" AND {clause} ${}", binds.len()));
        };
        if let Some(actor) = &filter.actor {
            condition(&mut sql, "actor =", actor.as_str().into());
        }
        match filter.action.as_deref() {
            Some(prefix) if prefix.ends_with('.') => {
                // A prefix match without LIKE, whose wildcards would need escaping.
                condition(&mut sql, "action >=", prefix.into());
                condition(
                    &mut sql,
                    "action <",
                    format!("{}/", prefix.trim_end_matches('.')).into(),
                );
            }
            Some(action) => condition(&mut sql, "action =", action.into()),
            None => {}
        }
        if let Some(resource) = &filter.resource {
            condition(&mut sql, "resource =", resource.as_str().into());
        }
        if let Some(outcome) = &filter.outcome {
            condition(&mut sql, "outcome =", outcome.as_str().into());
        }
        if let Some(since) = filter.since {
            condition(&mut sql, "at >=", to_ms(since).into());
        }
        if let Some(until) = filter.until {
            condition(&mut sql, "at <", to_ms(until).into());
        }
        if let Some(cursor) = &filter.cursor {
            let before_or_after = if filter.newest_first { "id <" } else { "id >" };
            condition(&mut sql, before_or_after, cursor.as_str().into());
        }
        let limit = filter.limit.clamp(1, 10_000);
        let direction = if filter.newest_first { "DESC" } else { "ASC" };
        sql.push_str(&format!(" ORDER BY id {direction} LIMIT {}", limit + 1));
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.read)
            .await?;
        let mut events = rows.iter().map(audit_from_row).collect::<Result<Vec<_>, _>>()?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        Ok((events, more))
    }
}

/// Appends events inside a caller's transaction, so a lifecycle change and its audit record
/// commit together.
pub(crate) async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    events: &[AuditRecord],
) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<SqlValue> = Vec::with_capacity(chunk.len() * N_COLUMNS);
        for event in chunk {
            values.extend([
                event.id.as_str().into(),
                to_ms(event.at).into(),
                event.actor.as_str().into(),
                event.action.as_str().into(),
                event.resource.clone().into(),
                event.request_id.clone().into(),
                event.outcome.as_str().into(),
                event.status.map(i64::from).into(),
                event.client.clone().into(),
                event.body_sha256.clone().into(),
                event.detail.clone().into(),
            ]);
        }
        let statement = sql!(
            "INSERT INTO audit_events ({COLUMNS}) VALUES {}",
            values_list(chunk.len(), N_COLUMNS, 0)
        );
        bind_all(sqlx::query(statement), values).execute(&mut **tx).await?;
    }
    Ok(())
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        at: from_ms(row.try_get("at")?)?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        request_id: row.try_get("request_id")?,
        outcome: row.try_get("outcome")?,
        status: row
            .try_get::<Option<i64>, _>("status")?
            .map(|s| u16::try_from(s).map_err(|_| StoreError::Corrupt(format!("status {s}"))))
            .transpose()?,
        client: row.try_get("client")?,
        body_sha256: row.try_get("body_sha256")?,
        detail: row.try_get("detail")?,
    })
}
