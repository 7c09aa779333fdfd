DROP INDEX events_integration;
DROP INDEX events_dead;
DROP INDEX events_pending;
CREATE INDEX events_integration_queue ON events (integration_id, status, received_at);
CREATE INDEX events_status ON events (status, next_attempt_at);
