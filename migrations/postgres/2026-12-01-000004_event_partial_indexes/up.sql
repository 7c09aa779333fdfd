-- The queue holds only what is still to be processed: recording an event processed
-- removes one index entry instead of moving it in two, and the queue stays as small
-- as the backlog. Queries name the status as a literal so that the planner can use
-- these partial indexes.
DROP INDEX events_integration_queue;
DROP INDEX events_status;
CREATE INDEX events_pending ON events (integration_id, received_at, id) WHERE status = 'pending';
-- Dead letters, for the admin listing and replays; nothing enters it on the hot path.
CREATE INDEX events_dead ON events (received_at) WHERE status = 'dead';
-- An integration's whole history, for the admin listing.
CREATE INDEX events_integration ON events (integration_id, received_at);
