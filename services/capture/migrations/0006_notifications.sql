-- Shopper notifications (README "Shopper notifications"): each shopper's preference, and one
-- record per message the event log asked for, with what became of it.

-- A shopper who opted out gets nothing more; `locale` is the language their messages are
-- written in (empty: the deployment's default).
CREATE TABLE notification_preferences (
    shopper_id  text PRIMARY KEY REFERENCES shoppers (id),
    opted_out   boolean NOT NULL DEFAULT false,
    locale      text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One notification per (event, template): a replayed event finds its row and mails nothing
-- more. No address or body is kept: the recipient is read from the shopper at sending time
-- (so an erasure stops what is still pending), and `params` holds only what the message
-- says beyond the shopper (order reference, carrier, tracking number, amount).
CREATE TABLE notifications (
    id              text PRIMARY KEY,
    order_id        text NOT NULL REFERENCES orders (id),
    shopper_id      text NOT NULL REFERENCES shoppers (id),
    event_id        text NOT NULL,
    -- The event's place in the log: an order's notifications list in the order of its events.
    event_sequence  bigint NOT NULL,
    template        text NOT NULL,
    locale          text NOT NULL,
    medium          text NOT NULL DEFAULT 'email',
    state           text NOT NULL CHECK (state IN ('pending', 'sent', 'skipped', 'failed')),
    params          jsonb NOT NULL DEFAULT '{}',
    subject         text NOT NULL DEFAULT '',
    attempts        int NOT NULL DEFAULT 0,
    error           text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- When the sender may take it next; a sender that takes it moves this past its lease, so
    -- a replica that dies mid-send leaves it to be taken again once the lease is over.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (event_id, template)
);
CREATE INDEX notifications_order ON notifications (order_id, event_sequence, template);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';

-- The notifier's place in the event log starts at the log's head as this migration runs:
-- events sequenced from here on are notified, none of the orders that came before (an
-- upgrade must not mail every past shopper).
INSERT INTO event_cursors (consumer, seq) SELECT 'notifications', seq FROM event_log_head
ON CONFLICT (consumer) DO NOTHING;
