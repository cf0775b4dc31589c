-- Payments: authorizations, invoices and their lines, captures, refunds.
-- Tables are unqualified: the migration runs with search_path set to the payments schema.
-- Money is integer minor units beside an ISO 4217 currency code.

CREATE TABLE authorizations (
    id                  text PRIMARY KEY,
    order_id            text NOT NULL,
    payment_method_type text NOT NULL,
    token               text NOT NULL,
    amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
    currency            text NOT NULL,
    captured_minor      bigint NOT NULL DEFAULT 0
                        CHECK (captured_minor >= 0 AND captured_minor <= amount_minor),
    status              text NOT NULL CHECK (status IN ('approved', 'declined', 'voided')),
    gateway_reference   text NOT NULL DEFAULT '',
    decline_reason      text NOT NULL DEFAULT '',
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX authorizations_order_id ON authorizations (order_id, created_at);

CREATE TABLE invoices (
    id                   text PRIMARY KEY,
    order_id             text NOT NULL,
    fulfillment_order_id text NOT NULL,
    currency             text NOT NULL,
    shipping_minor       bigint NOT NULL CHECK (shipping_minor >= 0),
    total_minor          bigint NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_order_id ON invoices (order_id, created_at);

CREATE TABLE invoice_lines (
    invoice_id     text NOT NULL REFERENCES invoices (id),
    position       integer NOT NULL,
    order_line_id  text NOT NULL,
    sku            text NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    gross_minor    bigint NOT NULL,
    discount_minor bigint NOT NULL,
    tax_minor      bigint NOT NULL,
    total_minor    bigint NOT NULL CHECK (total_minor = gross_minor - discount_minor + tax_minor),
    PRIMARY KEY (invoice_id, position)
);

CREATE TABLE captures (
    id                text PRIMARY KEY,
    invoice_id        text NOT NULL REFERENCES invoices (id),
    -- NULL when the capture failed before any authorization could be drawn on.
    authorization_id  text REFERENCES authorizations (id),
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    amount_minor      bigint NOT NULL CHECK (amount_minor >= 0),
    currency          text NOT NULL,
    gateway_reference text NOT NULL DEFAULT '',
    failure_reason    text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX captures_invoice_id ON captures (invoice_id, created_at);

-- Money given back from a capture (credit memos, returns); written by a later change.
CREATE TABLE refunds (
    id                text PRIMARY KEY,
    order_id          text NOT NULL,
    capture_id        text NOT NULL REFERENCES captures (id),
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency          text NOT NULL,
    reason            text NOT NULL DEFAULT '',
    gateway_reference text NOT NULL DEFAULT '',
    failure_reason    text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order_id ON refunds (order_id, created_at);
