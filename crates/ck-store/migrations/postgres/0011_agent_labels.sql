-- Agents carry labels, like certificates, so that a token restricted to some labels reaches
-- only the agents that carry them too: it lists, revokes and binds certificates to those only.
-- JSON object of strings, as certificates.labels. Agents registered before have none.
-- PostgreSQL flavour; keep in step with ../sqlite/0011_agent_labels.sql.
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
