-- De-duplication never spans tenants. An id the provider chooses for all its tenants
-- (GitHub's X-GitHub-Delivery, Slack's event_id) stays unique per connector: the scope
-- is ''. An id a tenant's own sender chooses (a generic webhook-id) is unique per
-- integration: the scope is the integration's id.
ALTER TABLE events ADD COLUMN delivery_scope TEXT NOT NULL DEFAULT '';
UPDATE events SET delivery_scope = COALESCE(integration_id, '') WHERE connector_type = 'webhook';
ALTER TABLE events DROP CONSTRAINT events_connector_type_delivery_id_key;
CREATE UNIQUE INDEX events_delivery ON events (connector_type, delivery_scope, delivery_id);
