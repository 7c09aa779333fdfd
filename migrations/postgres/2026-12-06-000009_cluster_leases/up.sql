-- Several nodes on one PostgreSQL (cluster mode): the nodes alive, and which node owns
-- each integration. Every time is the database's clock, never a node's. SQLite has
-- the tables too (one schema) and never uses them.
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL,
    -- A node whose heartbeat is older than this is gone.
    expires_at   TIMESTAMP NOT NULL
);

-- One row per live integration. The epoch grows with every change of owner: a side
-- effect is fenced by the (node, epoch) it was started under.
CREATE TABLE integration_leases (
    integration_id TEXT PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    node_id        TEXT,
    epoch          BIGINT NOT NULL DEFAULT 0,
    expires_at     TIMESTAMP NOT NULL
);
CREATE INDEX integration_leases_node ON integration_leases (node_id);
