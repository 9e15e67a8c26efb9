//! Notices between the nodes of a cluster over PostgreSQL's LISTEN/NOTIFY: "these jobs are
//! finished" (a request waiting on another node answers at once instead of at its next poll),
//! "the credentials changed" (a token revoked through one node stops working on every node
//! at once, not at the next reload) and "a certificate of this issuer was revoked" (every
//! node drops its cached OCSP answers and CRL, so no node keeps saying "good"), and "the ACME
//! account of this issuer changed" (after a key rollover or a deactivation, every node reloads
//! the account instead of signing with a key the CA no longer accepts). Notices are a shortcut, never the only path: a node
//! that misses one (its LISTEN connection was down) still polls. SQLite has one node: nothing
//! to send.

use ck_domain::JobId;
use sqlx::postgres::PgListener;

use crate::{Backend, Store, StoreError};

const JOBS_FINISHED: &str = "certkeeper_jobs_finished";
const CREDENTIALS_CHANGED: &str = "certkeeper_credentials_changed";
const REVOKED: &str = "certkeeper_revoked";
const ACCOUNT_CHANGED: &str = "certkeeper_account_changed";

/// Job ids per notice: a payload must stay under PostgreSQL's 8000 bytes.
const IDS_PER_NOTICE: usize = 200;

/// A notice from some node (this one included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These jobs reached a final state.
    JobsFinished(Vec<JobId>),
    /// Tokens or agent credentials were created, revoked or rotated.
    CredentialsChanged,
    /// A certificate of this issuer was revoked.
    Revoked {
        /// The issuer's id.
        issuer: String,
        /// The node that revoked it (which has acted already).
        node: String,
    },
    /// The ACME account of this issuer was rolled over or deactivated.
    AccountChanged {
        /// The issuer's id.
        issuer: String,
        /// The node that changed it (which has acted already).
        node: String,
    },
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
                channel @ (REVOKED | ACCOUNT_CHANGED) => {
                    if let Some((issuer, node)) = notification.payload().split_once('|') {
                        let (issuer, node) = (issuer.to_owned(), node.to_owned());
                        return Ok(if channel == REVOKED {
                            Notice::Revoked { issuer, node }
                        } else {
                            Notice::AccountChanged { issuer, node }
                        });
                    }
                }
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
        listener
            .listen_all([JOBS_FINISHED, CREDENTIALS_CHANGED, REVOKED, ACCOUNT_CHANGED])
            .await?;
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

    /// Tells every node that `node` revoked a certificate of `issuer`.
    pub async fn publish_revoked(&self, issuer: &str, node: &str) -> Result<(), StoreError> {
        self.notify_issuer(REVOKED, issuer, node).await
    }

    /// Tells every node that `node` changed the ACME account of `issuer`.
    pub async fn publish_account_changed(&self, issuer: &str, node: &str) -> Result<(), StoreError> {
        self.notify_issuer(ACCOUNT_CHANGED, issuer, node).await
    }

    async fn notify_issuer(&self, channel: &str, issuer: &str, node: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        self.notify(channel, &format!("{issuer}|{node}")).await
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
