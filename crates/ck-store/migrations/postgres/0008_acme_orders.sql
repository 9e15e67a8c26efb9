-- The ACME order a job has placed, recorded before it is finalized, so a worker that takes
-- the job over (its first worker died) resumes that order instead of placing a second one.
-- PostgreSQL flavour; keep in step with ../sqlite/0008_acme_orders.sql.
CREATE TABLE acme_orders (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    order_url TEXT NOT NULL,
    csr_pem TEXT NOT NULL,
    -- Sealed like every private key: the key of a server-made CSR, which the certificate of
    -- an already finalized order certifies.
    private_key_pem TEXT,
    created_at BIGINT NOT NULL
);
