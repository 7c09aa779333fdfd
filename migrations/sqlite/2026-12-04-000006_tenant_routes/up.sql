-- Routes tenants create through the API, beside the operator's [[routes]]. The
-- action's settings are JSON; the ones that are secrets (http.forward's signing
-- secret) are kept apart, encrypted by the vault and bound to the route.
CREATE TABLE routes (
    id                 TEXT PRIMARY KEY,
    organization_id    TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connector          TEXT NOT NULL,
    event_type         TEXT NOT NULL,
    action             TEXT NOT NULL,
    settings           TEXT NOT NULL,
    secrets            BLOB,
    encryption_key_id  TEXT,
    created_at         TIMESTAMP NOT NULL
);
CREATE INDEX routes_by_organization ON routes (organization_id, created_at);
