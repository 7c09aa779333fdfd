ALTER TABLE events DROP COLUMN occurred_at;
