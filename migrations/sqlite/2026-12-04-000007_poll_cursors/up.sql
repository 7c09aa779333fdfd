-- Where each integration's polling stands: the provider's cursor, saved only once the
-- events it led to are durable, and when it polled last and polls next.
CREATE TABLE poll_cursors (
    integration_id  TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    stream          TEXT NOT NULL DEFAULT '',
    cursor          TEXT,
    last_polled_at  TIMESTAMP,
    next_poll_at    TIMESTAMP,
    last_error      TEXT,
    PRIMARY KEY (integration_id, stream)
);
