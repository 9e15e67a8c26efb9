-- Scoped, expiring, restricted API tokens with salted hashes, and the append-only audit
-- trail. PostgreSQL flavour; keep in step with ../sqlite/0006_access_control.sql.

-- Tokens made from now on are 'ck_<key>_<secret>': the key finds the row, and token_hash is
-- 'hmac-sha256$<salt>$<mac>' of the secret. Rows from before keep a bare SHA-256 and no key.
ALTER TABLE api_tokens ADD COLUMN token_key TEXT;
CREATE UNIQUE INDEX api_tokens_key ON api_tokens (token_key);
-- The bootstrap admin token of earlier versions keeps every operator scope.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'read,create,update,delete,admin,export-key';
-- JSON {"labels": {...}, "name_suffixes": [...]}; NULL when the token reaches every certificate.
ALTER TABLE api_tokens ADD COLUMN restriction TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
-- Set by the expiry loop once expires_at has passed (for listing and the audit trail).
ALTER TABLE api_tokens ADD COLUMN expired_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
ALTER TABLE api_tokens ADD COLUMN rotated_at BIGINT;
-- A TLS client certificate with this subject signs in as this token (mTLS).
ALTER TABLE api_tokens ADD COLUMN client_subject TEXT;

ALTER TABLE agents ADD COLUMN token_key TEXT;
CREATE UNIQUE INDEX agents_token_key ON agents (token_key);
ALTER TABLE agents ADD COLUMN revoked_at BIGINT;

-- Who did what, when, with which outcome. Rows are only ever inserted: no code path updates
-- or deletes them, and the triggers below refuse it to anyone with SQL access too.
CREATE TABLE audit_events (
    -- UUIDv7: ordered by time, so it is also the pagination cursor.
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    -- 'token:<name>', 'agent:<name>', 'system', 'anonymous'.
    actor TEXT NOT NULL,
    -- 'certificate.create', 'certificate.issued', 'token.revoke', 'auth.failure'…
    action TEXT NOT NULL,
    -- 'certificate/<id>', 'token/<id>'…
    resource TEXT,
    request_id TEXT,
    -- 'success', 'failure' or 'denied'.
    outcome TEXT NOT NULL,
    -- The HTTP status, for events that are API calls.
    status BIGINT,
    client TEXT,
    -- SHA-256 of the request body: proves what was sent without storing it.
    body_sha256 TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_resource ON audit_events (resource);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
