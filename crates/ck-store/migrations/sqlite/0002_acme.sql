-- ACME issuers, per-certificate challenge choice, problem documents on jobs, per-identifier
-- backoff. SQLite flavour; keep in step with ../postgres/0002_acme.sql.

-- The issuer's settings as JSON (secrets included: only the server reads them back).
ALTER TABLE issuers ADD COLUMN settings TEXT;
-- ACME account credentials (account URL + private key). Secret.
ALTER TABLE issuers ADD COLUMN account_credentials TEXT;
ALTER TABLE issuers ADD COLUMN account_url TEXT;
-- Last health check: 'healthy' or 'unhealthy' (NULL until the first check).
ALTER TABLE issuers ADD COLUMN health TEXT;
ALTER TABLE issuers ADD COLUMN health_detail TEXT;
ALTER TABLE issuers ADD COLUMN health_checked_at BIGINT;

-- Challenge type for ACME issuers, overriding the issuer's default.
ALTER TABLE certificates ADD COLUMN challenge TEXT;

-- The CA's problem document (JSON) of the last failed attempt.
ALTER TABLE jobs ADD COLUMN problem TEXT;

-- Consecutive ACME failures per identifier, so one bad name is not retried into a CA's
-- rate limits by every certificate that carries it.
CREATE TABLE identifier_backoff (
    issuer_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    failures BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    PRIMARY KEY (issuer_id, identifier)
);
