-- The event log (README "Events"): every change of every order, written in the transaction of
-- the change (unsequenced), then given its place in the log by the sequencer.
CREATE TABLE order_events (
    -- Write order. Events of one order are written under that order's lock, so their ids
    -- follow the order's own commit order.
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    -- Position in the log, set by the sequencer: gap-free and in commit order (NULL until then).
    seq          bigint UNIQUE,
    order_id     text NOT NULL,
    type         text NOT NULL,
    channel      text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz,
    -- The serialized oms.events.v1.Event, without sequence and recorded_at.
    body         bytea NOT NULL
);
CREATE INDEX order_events_unsequenced ON order_events (id) WHERE seq IS NULL;
CREATE INDEX order_events_recorded ON order_events (recorded_at);
CREATE INDEX order_events_order ON order_events (order_id, seq);

-- The log's head: the last sequence given. Its one row is the sequencer's lock.
CREATE TABLE event_log_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL
);
INSERT INTO event_log_head (seq) VALUES (0);

-- Durable positions of oms's own consumers of the log (webhook fan-out, notifications): the
-- last sequence each has taken, advanced in the transaction of what it made from the events.
CREATE TABLE event_cursors (
    consumer text PRIMARY KEY,
    seq      bigint NOT NULL
);
