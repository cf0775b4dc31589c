-- Several payment methods per order, re-authorization, credit memos, refunds and releases.

-- Made order: authorizations (and captures, refunds) made in one call share a timestamp, so a
-- sequence keeps the order they were made in (gift card before card).
ALTER TABLE authorizations ADD COLUMN sequence bigint GENERATED ALWAYS AS IDENTITY;
-- Released from the hold before capture (partial reversals for credit memos).
ALTER TABLE authorizations ADD COLUMN reversed_minor bigint NOT NULL DEFAULT 0
    CHECK (reversed_minor >= 0);
ALTER TABLE authorizations ADD CONSTRAINT authorizations_within_hold
    CHECK (captured_minor + reversed_minor <= amount_minor);
-- The expired authorization a re-authorization holds anew.
ALTER TABLE authorizations ADD COLUMN replaces_authorization_id text REFERENCES authorizations (id);
ALTER TABLE authorizations DROP CONSTRAINT authorizations_status_check;
ALTER TABLE authorizations ADD CONSTRAINT authorizations_status_check
    CHECK (status IN ('approved', 'declined', 'voided', 'expired'));
DROP INDEX authorizations_order_id;
CREATE INDEX authorizations_order_id ON authorizations (order_id, created_at, sequence);

ALTER TABLE captures ADD COLUMN sequence bigint GENERATED ALWAYS AS IDENTITY;

CREATE TABLE credit_memos (
    id             text PRIMARY KEY,
    order_id       text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('unspecified', 'cancel', 'return', 'appeasement')),
    reason         text NOT NULL DEFAULT '',
    currency       text NOT NULL,
    shipping_minor bigint NOT NULL CHECK (shipping_minor >= 0),
    fee_minor      bigint NOT NULL CHECK (fee_minor >= 0),
    total_minor    bigint NOT NULL CHECK (total_minor >= 0),
    -- A cancel's release is done (its money was never taken, so nothing more is owed).
    settled        boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sequence       bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX credit_memos_order_id ON credit_memos (order_id, created_at, sequence);

CREATE TABLE credit_memo_lines (
    credit_memo_id text NOT NULL REFERENCES credit_memos (id),
    position       integer NOT NULL,
    order_line_id  text NOT NULL,
    sku            text NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    gross_minor    bigint NOT NULL,
    discount_minor bigint NOT NULL,
    tax_minor      bigint NOT NULL,
    total_minor    bigint NOT NULL CHECK (total_minor = gross_minor - discount_minor + tax_minor),
    PRIMARY KEY (credit_memo_id, position)
);

CREATE TABLE credit_memo_appeasements (
    credit_memo_id       text NOT NULL REFERENCES credit_memos (id),
    position             integer NOT NULL,
    -- '' for the whole order.
    order_line_id        text NOT NULL,
    -- 0 when an absolute amount was asked.
    percent_basis_points integer NOT NULL CHECK (percent_basis_points BETWEEN 0 AND 10000),
    amount_minor         bigint NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (credit_memo_id, position)
);

-- Refunds give back a credit memo's money from one capture.
ALTER TABLE refunds ADD COLUMN credit_memo_id text REFERENCES credit_memos (id);
ALTER TABLE refunds ADD COLUMN sequence bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX refunds_capture_id ON refunds (capture_id);

-- Releases of an authorization's hold before capture, for a credit memo.
CREATE TABLE authorization_reversals (
    id                text PRIMARY KEY,
    order_id          text NOT NULL,
    credit_memo_id    text NOT NULL REFERENCES credit_memos (id),
    authorization_id  text NOT NULL REFERENCES authorizations (id),
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    amount_minor      bigint NOT NULL CHECK (amount_minor > 0),
    currency          text NOT NULL,
    -- It released all that remained: the authorization is voided.
    voided            boolean NOT NULL,
    gateway_reference text NOT NULL DEFAULT '',
    failure_reason    text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    sequence          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX authorization_reversals_order_id ON authorization_reversals (order_id, created_at, sequence);
