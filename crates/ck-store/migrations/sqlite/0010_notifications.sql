-- Notifications. An event is written in the same transaction as what it reports (a new
-- version, a failed attempt, a revocation…), so none is lost; the dedup key makes a second
-- report of the same thing (another loop run, another node, a restart) a no-op. Routing turns
-- an event into one notification per notifier that wants it; a delivery loop sends those with
-- retries until they are delivered or dead (kept, listed and requeued through the API).
-- SQLite flavour; keep in step with ../postgres/0010_notifications.sql.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dedup_key TEXT UNIQUE,
    certificate_id TEXT,
    subject TEXT,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    routed_at BIGINT
);
CREATE INDEX events_unrouted ON events (created_at) WHERE routed_at IS NULL;
CREATE INDEX events_certificate ON events (certificate_id, created_at);

CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events(id),
    notifier TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (event_id, notifier)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX notifications_state ON notifications (state, created_at);

-- Days before expiry at which a certificate warns (NULL: the server's default), and the nearest
-- threshold already announced for the current version (NULL: none yet), so the expiry scan
-- skips what it has done.
ALTER TABLE certificates ADD COLUMN expiry_thresholds TEXT;
ALTER TABLE certificates ADD COLUMN alerted_days BIGINT;
