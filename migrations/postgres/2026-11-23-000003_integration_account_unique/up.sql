-- A provider account (Slack team, GitHub installation) is bound to one live
-- integration at most: its events are routed by that id, so two owners would leak
-- one tenant's events to another.
CREATE UNIQUE INDEX integrations_bound_account ON integrations (connector_type, external_id)
    WHERE external_id IS NOT NULL AND status NOT IN ('pending', 'revoked');
