-- Back to one id per connector: of the events that now share one, the oldest stays.
CREATE TABLE events_old (
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
    UNIQUE (connector_type, delivery_id)
);
INSERT OR IGNORE INTO events_old (id, organization_id, integration_id, connector_type,
        event_type, delivery_id, payload, received_at, status, attempts, next_attempt_at,
        last_error, processed_at, occurred_at)
    SELECT id, organization_id, integration_id, connector_type, event_type, delivery_id,
        payload, received_at, status, attempts, next_attempt_at, last_error, processed_at,
        occurred_at
    FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_old RENAME TO events;
CREATE INDEX events_pending ON events (integration_id, received_at, id) WHERE status = 'pending';
CREATE INDEX events_dead ON events (received_at) WHERE status = 'dead';
CREATE INDEX events_integration ON events (integration_id, received_at);
