-- The answers to pending http-01 challenges, so that whichever node the CA's validation
-- request reaches can answer for an order another node placed. Key authorizations are not
-- secret: anyone may fetch them from /.well-known/acme-challenge/ while they are pending.
-- SQLite flavour; keep in step with ../postgres/0009_acme_http01.sql.
CREATE TABLE acme_http01 (
    token TEXT PRIMARY KEY,
    key_authorization TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
