-- Back to one id per connector: of the events that now share one, the oldest stays.
DROP INDEX events_delivery;
DELETE FROM events later USING events earlier
    WHERE later.connector_type = earlier.connector_type
      AND later.delivery_id = earlier.delivery_id
      AND later.id > earlier.id;
ALTER TABLE events DROP COLUMN delivery_scope;
ALTER TABLE events ADD CONSTRAINT events_connector_type_delivery_id_key UNIQUE (connector_type, delivery_id);
