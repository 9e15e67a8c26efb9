-- Agents: hosts that generate their own keys and deploy certificates, pulling work from the
-- control plane. PostgreSQL flavour; keep in step with ../sqlite/0003_agents.sql.

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- SHA-256 of the agent's token; the token itself is shown once, at creation.
    token_hash TEXT NOT NULL UNIQUE,
    hostname TEXT,
    os TEXT,
    arch TEXT,
    version TEXT,
    last_seen BIGINT,
    created_at BIGINT NOT NULL
);
