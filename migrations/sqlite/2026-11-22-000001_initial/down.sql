DROP TABLE audit_log;
DROP TABLE events;
DROP TABLE oauth_states;
DROP TABLE integration_credentials;
DROP TABLE integrations;
DROP TABLE vault_keys;
DROP TABLE api_tokens;
DROP TABLE organizations;
