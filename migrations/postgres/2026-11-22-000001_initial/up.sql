-- switchboard's schema. Ids are text UUIDs, JSON is text, timestamps are UTC.
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE api_tokens (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_hash       TEXT NOT NULL UNIQUE,
    created_at       TIMESTAMP NOT NULL,
    last_used_at     TIMESTAMP,
    revoked_at       TIMESTAMP
);
CREATE INDEX api_tokens_organization ON api_tokens (organization_id);

CREATE TABLE vault_keys (
    id                  TEXT PRIMARY KEY,
    wrapped_key         BYTEA NOT NULL,
    master_fingerprint  TEXT NOT NULL,
    active              BOOLEAN NOT NULL,
    created_at          TIMESTAMP NOT NULL
);
-- At most one active data key.
CREATE UNIQUE INDEX vault_keys_one_active ON vault_keys (active) WHERE active;

CREATE TABLE integrations (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          TEXT,
    connector_type   TEXT NOT NULL,
    status           TEXT NOT NULL,
    external_id      TEXT,
    metadata         TEXT NOT NULL DEFAULT '{}',
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    last_used_at     TIMESTAMP
);
-- At most one non-revoked integration per (organization, connector).
CREATE UNIQUE INDEX integrations_one_live_per_connector
    ON integrations (organization_id, connector_type) WHERE status <> 'revoked';
-- Events are routed to integrations by the provider's account id.
CREATE INDEX integrations_external ON integrations (connector_type, external_id);

CREATE TABLE integration_credentials (
    id                 TEXT PRIMARY KEY,
    integration_id     TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    organization_id    TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    credential_type    TEXT NOT NULL,
    ciphertext         BYTEA NOT NULL,
    encryption_key_id  TEXT NOT NULL REFERENCES vault_keys (id),
    expires_at         TIMESTAMP,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL,
    UNIQUE (integration_id, credential_type)
);
-- Rotation finds the credentials still under an old key.
CREATE INDEX integration_credentials_key ON integration_credentials (encryption_key_id, id);
CREATE INDEX integration_credentials_expiry ON integration_credentials (expires_at);

CREATE TABLE oauth_states (
    state_hash       TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connector_type   TEXT NOT NULL,
    user_id          TEXT,
    created_at       TIMESTAMP NOT NULL,
    expires_at       TIMESTAMP NOT NULL,
    consumed_at      TIMESTAMP
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

CREATE TABLE events (
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
    UNIQUE (connector_type, delivery_id)
);
-- Each integration drains its own events in arrival order.
CREATE INDEX events_integration_queue ON events (integration_id, status, received_at);
CREATE INDEX events_status ON events (status, next_attempt_at);

CREATE TABLE audit_log (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT,
    actor            TEXT NOT NULL,
    action           TEXT NOT NULL,
    integration_id   TEXT,
    details          TEXT NOT NULL DEFAULT '{}',
    created_at       TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_organization ON audit_log (organization_id, created_at);
