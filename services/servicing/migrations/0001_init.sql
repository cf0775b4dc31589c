-- Process exceptions: failures that need a human, raised by the order workflow.
-- Enumerations are stored as lower-case words (the names of the design brief).
CREATE TABLE process_exceptions (
    id          text PRIMARY KEY,
    order_id    text NOT NULL,
    category    text NOT NULL CHECK (category IN
                    ('payment', 'fulfillment', 'inventory', 'fraud', 'carrier', 'invoicing')),
    severity    text NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    status      text NOT NULL CHECK (status IN
                    ('new', 'triaged', 'paused', 'ignored', 'voided', 'resolved')),
    attached_to text NOT NULL DEFAULT '' CHECK (char_length(attached_to) <= 256),
    message     text NOT NULL CHECK (char_length(message) BETWEEN 1 AND 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Listing is newest first with (created_at, id) as the keyset cursor; each index ends in
-- that order so a filtered page is an index range scan.
CREATE INDEX process_exceptions_by_order
    ON process_exceptions (order_id, created_at DESC, id DESC);
CREATE INDEX process_exceptions_by_status
    ON process_exceptions (status, created_at DESC, id DESC);
CREATE INDEX process_exceptions_by_category
    ON process_exceptions (category, created_at DESC, id DESC);
CREATE INDEX process_exceptions_newest
    ON process_exceptions (created_at DESC, id DESC);
