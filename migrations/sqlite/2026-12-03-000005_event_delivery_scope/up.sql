-- De-duplication never spans tenants. An id the provider chooses for all its tenants
-- (GitHub's X-GitHub-Delivery, Slack's event_id) stays unique per connector: the scope
-- is ''. An id a tenant's own sender chooses (a generic webhook-id) is unique per
-- integration: the scope is the integration's id. SQLite cannot drop a table's UNIQUE
-- constraint, so the table is rebuilt with its rows.
CREATE TABLE events_new (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT,
    integration_id   TEXT,
    connector_type   TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    delivery_id      TEXT NOT NULL,
    payload          TEXT NOT NULL,
    received_at      TIMESTAMP NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMP,
    last_error       TEXT,
    processed_at     TIMESTAMP,
    occurred_at      TIMESTAMP,
    delivery_scope   TEXT NOT NULL DEFAULT ''
);
INSERT INTO events_new (id, organization_id, integration_id, connector_type, event_type,
        delivery_id, payload, received_at, status, attempts, next_attempt_at, last_error,
        processed_at, occurred_at, delivery_scope)
    SELECT id, organization_id, integration_id, connector_type, event_type, delivery_id,
        payload, received_at, status, attempts, next_attempt_at, last_error, processed_at,
        occurred_at,
        CASE WHEN connector_type = 'webhook' THEN COALESCE(integration_id, '') ELSE '' END
    FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE UNIQUE INDEX events_delivery ON events (connector_type, delivery_scope, delivery_id);
CREATE INDEX events_pending ON events (integration_id, received_at, id) WHERE status = 'pending';
CREATE INDEX events_dead ON events (received_at) WHERE status = 'dead';
CREATE INDEX events_integration ON events (integration_id, received_at);
