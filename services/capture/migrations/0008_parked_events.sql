-- Warehouse steps (RecordOrderEvents) of a fulfillment order the log has not told of yet: its
-- fulfillment.allocated is still on its way from the order's lifecycle (README "Events"). They
-- wait here, written with the request, and go to order_events in the transaction that logs
-- the allocation, right after it (or, after events_park_max_seconds, on their own), so no
-- reader sees a fulfillment order accepted before it was allocated.
CREATE TABLE parked_events (
    -- Arrival order: they are released in it.
    id                    bigserial PRIMARY KEY,
    event_id              text NOT NULL UNIQUE,
    order_id              text NOT NULL,
    fulfillment_order_id  text NOT NULL,
    parked_at             timestamptz NOT NULL DEFAULT now(),
    -- The oms.events.v1.Event as append_events writes it.
    body                  bytea NOT NULL
);
CREATE INDEX parked_events_order ON parked_events (order_id);
CREATE INDEX parked_events_age ON parked_events (parked_at);
