-- Chat messages posted about a subject (an incident, an alert), so that later events
-- of the same subject update the message instead of posting another. A row goes when
-- its subject ends.
CREATE TABLE chat_messages (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    connector       TEXT NOT NULL,
    channel         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    -- Where the message is, in the chat connector's terms (Slack: channel id and ts).
    message_ref     TEXT NOT NULL,
    posted_at       TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (organization_id, connector, channel, subject)
);
