//! Notices between the nodes of a cluster over PostgreSQL's LISTEN/NOTIFY: "these jobs are
//! finished" (a request waiting on another node answers at once instead of at its next poll)
//! and "the credentials changed" (a token revoked through one node stops working on every node
//! at once, not at the next reload). Notices are a shortcut, never the only path: a node
//! that misses one (its LISTEN connection was down) still polls. SQLite has one node: nothing
//! to send.

use ck_domain::JobId;
use sqlx::postgres::PgListener;

use crate::{Backend, Store, StoreError};

const JOBS_FINISHED: &str = "certkeeper_jobs_finished";
const CREDENTIALS_CHANGED: &str = "certkeeper_credentials_changed";

/// Job ids per notice: a payload must stay under PostgreSQL's 8000 bytes.
const IDS_PER_NOTICE: usize = 200;

/// A notice from some node (this one included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These jobs reached a final state.
    JobsFinished(Vec<JobId>),
    /// Tokens or agent credentials were created, revoked or rotated.
    CredentialsChanged,
}

/// A LISTEN connection; it reconnects by itself after a lost connection.
#[derive(Debug)]
pub struct NoticeListener(PgListener);

impl NoticeListener {
    /// The next notice. Unknown or malformed ones are skipped.
    pub async fn next(&mut self) -> Result<Notice, StoreError> {
        loop {
            let notification = self.0.recv().await?;
            match notification.channel() {
                JOBS_FINISHED => {
                    let ids: Vec<JobId> = notification
                        .payload()
                        .split(',')
                        .filter_map(|id| id.parse().ok())
                        .collect();
                    if !ids.is_empty() {
                        return Ok(Notice::JobsFinished(ids));
                    }
                }
                CREDENTIALS_CHANGED => return Ok(Notice::CredentialsChanged),
                _ => {}
            }
        }
    }
}

impl Store {
    /// Listens for notices; `None` on SQLite.
    pub async fn listen(&self) -> Result<Option<NoticeListener>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(self.url.expose()).await?;
        listener.listen_all([JOBS_FINISHED, CREDENTIALS_CHANGED]).await?;
        Ok(Some(NoticeListener(listener)))
    }

    /// Tells every node that `ids` are finished.
    pub async fn publish_jobs_finished(&self, ids: &[JobId]) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        for chunk in ids.chunks(IDS_PER_NOTICE) {
            let payload = chunk.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
            self.notify(JOBS_FINISHED, &payload).await?;
        }
        Ok(())
    }

    /// Tells every node to reload its credentials.
    pub async fn publish_credentials_changed(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        self.notify(CREDENTIALS_CHANGED, "").await
    }

    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
