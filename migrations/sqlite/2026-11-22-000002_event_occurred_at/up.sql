-- When the provider says the event happened (its timestamp), beside when we received it.
ALTER TABLE events ADD COLUMN occurred_at TIMESTAMP;
