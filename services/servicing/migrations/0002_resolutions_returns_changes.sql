-- Resolving and escalating process exceptions, return orders (RMAs) and changes to orders.

-- Escalation can raise a high exception one level further.
ALTER TABLE process_exceptions DROP CONSTRAINT process_exceptions_severity_check;
ALTER TABLE process_exceptions ADD CONSTRAINT process_exceptions_severity_check
    CHECK (severity IN ('low', 'medium', 'high', 'critical'));

-- How an exception was resolved (set with status 'resolved'), when it last escalated, and
-- the last agent note on a status change. '' means not set.
ALTER TABLE process_exceptions
    ADD COLUMN resolution_action text NOT NULL DEFAULT ''
        CHECK (resolution_action IN ('', 'retry', 'skip', 'cancel')),
    ADD COLUMN resolution_note   text NOT NULL DEFAULT '',
    ADD COLUMN resolved_by       text NOT NULL DEFAULT '',
    ADD COLUMN resolved_at       timestamptz,
    ADD COLUMN order_status      text NOT NULL DEFAULT '',
    ADD COLUMN escalated_at      timestamptz,
    ADD COLUMN note              text NOT NULL DEFAULT '',
    ADD COLUMN updated_by        text NOT NULL DEFAULT '',
    ADD CONSTRAINT process_exceptions_resolved_has_action
        CHECK ((status = 'resolved') = (resolution_action <> ''));

CREATE INDEX process_exceptions_by_severity
    ON process_exceptions (severity, created_at DESC, id DESC);

-- Return orders: ids are assigned by the order's workflow ("<order_id>-R<n>").
CREATE TABLE return_orders (
    id          text PRIMARY KEY,
    order_id    text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX return_orders_by_order ON return_orders (order_id, created_at, id);

-- Quantities per line; received = accepted + rejected (never stored separately). The
-- return order's status is derived from these.
CREATE TABLE return_order_lines (
    return_order_id   text NOT NULL REFERENCES return_orders (id),
    order_line_id     text NOT NULL,
    position          int NOT NULL,
    quantity_expected bigint NOT NULL CHECK (quantity_expected > 0),
    quantity_accepted bigint NOT NULL DEFAULT 0 CHECK (quantity_accepted >= 0),
    quantity_rejected bigint NOT NULL DEFAULT 0 CHECK (quantity_rejected >= 0),
    reason            text NOT NULL DEFAULT '',
    condition         text NOT NULL DEFAULT ''
        CHECK (condition IN ('', 'new', 'opened', 'used', 'damaged', 'defective')),
    rejection_reason  text NOT NULL DEFAULT '',
    PRIMARY KEY (return_order_id, order_line_id),
    CHECK (quantity_accepted + quantity_rejected <= quantity_expected)
);

-- Changes to orders, as asked for and as answered by the order's workflow. change_id is
-- derived from (order, kind, idempotency key) and is also the Temporal Update id, so a
-- retried Submit reaches the same Update and gets the same answer.
CREATE TABLE changes (
    change_id             text PRIMARY KEY,
    order_id              text NOT NULL,
    kind                  text NOT NULL CHECK (kind IN
                              ('cancel', 'return', 'receive_return', 'exchange', 'reship',
                               'appease')),
    status                text NOT NULL CHECK (status IN
                              ('pending', 'completed', 'refused', 'failed')),
    idempotency_key       text NOT NULL,
    request_hash          bytea NOT NULL,
    actor                 text NOT NULL,
    reason                text NOT NULL DEFAULT '',
    -- The whole request as servicing validated it (what, including per-line notes).
    request               jsonb NOT NULL,
    requested_lines       jsonb NOT NULL DEFAULT '[]',
    -- The outcome; money in minor units of the order's currency.
    summary               text NOT NULL DEFAULT '',
    outcome_lines         jsonb NOT NULL DEFAULT '[]',
    credit_memo_id        text NOT NULL DEFAULT '',
    credited_minor        bigint NOT NULL DEFAULT 0,
    refunded_minor        bigint NOT NULL DEFAULT 0,
    released_minor        bigint NOT NULL DEFAULT 0,
    charged_minor         bigint NOT NULL DEFAULT 0,
    fulfillment_order_ids text[] NOT NULL DEFAULT '{}',
    return_order_id       text NOT NULL DEFAULT '',
    order_status          text NOT NULL DEFAULT '',
    refusal_code          text NOT NULL DEFAULT '',
    refusal_message       text NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    completed_at          timestamptz,
    UNIQUE (order_id, kind, idempotency_key)
);
CREATE INDEX changes_by_order ON changes (order_id, created_at, change_id);
