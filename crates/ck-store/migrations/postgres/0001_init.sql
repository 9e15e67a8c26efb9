-- certkeeper schema, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql.
-- Times are Unix milliseconds (BIGINT): sqlx's Any driver has no portable timestamp type.

CREATE TABLE issuers (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    root_cert_pem TEXT,
    root_key_pem TEXT,
    intermediate_cert_pem TEXT,
    intermediate_key_pem TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE certificates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    common_name TEXT NOT NULL,
    sans TEXT NOT NULL,
    issuer_id TEXT NOT NULL REFERENCES issuers(id),
    key_type TEXT NOT NULL,
    key_source TEXT NOT NULL,
    csr_pem TEXT,
    status TEXT NOT NULL,
    validity_days BIGINT NOT NULL,
    renew_fraction DOUBLE PRECISION,
    renew_days BIGINT,
    renew_jitter DOUBLE PRECISION NOT NULL,
    labels TEXT NOT NULL,
    current_version BIGINT NOT NULL DEFAULT 0,
    serial TEXT,
    fingerprint TEXT,
    not_before BIGINT,
    not_after BIGINT,
    renew_at BIGINT,
    last_error TEXT,
    revoked_at BIGINT,
    revocation_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX certificates_status ON certificates (status);
CREATE INDEX certificates_renew_at ON certificates (renew_at);
CREATE INDEX certificates_not_after ON certificates (not_after);

CREATE TABLE certificate_versions (
    certificate_id TEXT NOT NULL REFERENCES certificates(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    serial TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    csr_pem TEXT NOT NULL,
    private_key_pem TEXT,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    job_id TEXT NOT NULL UNIQUE,
    revoked_at BIGINT,
    revocation_reason TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (certificate_id, version)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    certificate_id TEXT NOT NULL REFERENCES certificates(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    -- Set to the certificate id while the job is pending or running, NULL once it finishes:
    -- the unique index makes "one active job per certificate" a database rule.
    active_key TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX jobs_claim ON jobs (state, run_after);
CREATE INDEX jobs_certificate ON jobs (certificate_id);
