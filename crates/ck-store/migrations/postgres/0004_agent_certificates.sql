-- Certificates bound to agents, and agent token scopes. PostgreSQL flavour; keep in step
-- with ../sqlite/0004_agent_certificates.sql.

-- The agent that deploys the certificate (agents are never deleted while bound).
ALTER TABLE certificates ADD COLUMN agent_id TEXT;
CREATE INDEX certificates_by_agent ON certificates (agent_id);

-- 'deploy': the agent makes keys and sends CSRs; 'read': it only pulls certificates with
-- server-generated keys (the acme-manager-client model).
ALTER TABLE agents ADD COLUMN scope TEXT NOT NULL DEFAULT 'deploy';
