-- Return policies as data: rules matched by the order's channel and the line's product
-- category ('' matches any), the most specific deciding; product categories per SKU (orders
-- carry no category); and the return labels a carrier issued for return orders.

CREATE TABLE return_policy_rules (
    id                           text PRIMARY KEY,
    channel                      text NOT NULL DEFAULT '',
    category                     text NOT NULL DEFAULT '',
    -- Days after delivery a return is accepted; NULL means the deployment's return window for
    -- the order's channel (settings return_window_days, return_window_days_by_channel).
    return_days                  integer CHECK (return_days IS NULL OR return_days >= 0),
    -- Conditions a returned unit must be reported in (empty: any).
    required_conditions          text[] NOT NULL DEFAULT '{}',
    final_sale                   boolean NOT NULL DEFAULT false,
    restocking_fee_basis_points  integer NOT NULL DEFAULT 0
        CHECK (restocking_fee_basis_points BETWEEN 0 AND 10000),
    description                  text NOT NULL DEFAULT '',
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    updated_by                   text NOT NULL DEFAULT '',
    -- One rule per (channel, category), so "the most specific" is never a tie.
    UNIQUE (channel, category)
);

-- The rule every return falls back to: today's windows per channel, no fee.
INSERT INTO return_policy_rules (id, description, updated_by)
VALUES ('default', 'returns within the return window of the order''s channel', 'migration');

CREATE TABLE sku_categories (
    sku         text PRIMARY KEY,
    category    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One label per return order: the carrier's tracking number and the label itself.
CREATE TABLE return_labels (
    return_order_id  text PRIMARY KEY REFERENCES return_orders (id),
    order_id         text NOT NULL,
    carrier          text NOT NULL,
    tracking_number  text NOT NULL,
    pdf              bytea NOT NULL,
    tracking_status  text NOT NULL DEFAULT 'label_created',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
