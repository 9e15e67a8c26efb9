-- Several control-plane nodes on one database: the leader lease with its fencing epoch, and
-- the nodes' heartbeats. PostgreSQL flavour; keep in step with ../sqlite/0007_cluster.sql.

-- One row per lease (today only 'leader'). The epoch grows at every change of holder (and
-- when a holder comes back after its lease ran out); singleton writes carry it, and a write
-- with an older epoch is refused, so a paused former leader cannot act.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL
);

CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT,
    version TEXT,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
