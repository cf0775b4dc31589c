-- Capture's schema: shoppers, orders with their delivery groups and lines, and timelines.
-- Money is integer minor units in the order's currency.

CREATE TABLE shoppers (
    id               text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('person', 'business')),
    email_normalized text NOT NULL DEFAULT '',
    name             text NOT NULL DEFAULT '',
    phone            text NOT NULL DEFAULT '',
    company          text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- One shopper per email, so the same person on every channel is one shopper.
CREATE UNIQUE INDEX shoppers_email ON shoppers (email_normalized) WHERE email_normalized <> '';

CREATE TABLE shopper_channel_ids (
    channel             text NOT NULL,
    channel_customer_id text NOT NULL,
    shopper_id          text NOT NULL REFERENCES shoppers (id),
    PRIMARY KEY (channel, channel_customer_id)
);
CREATE INDEX shopper_channel_ids_shopper ON shopper_channel_ids (shopper_id, channel);

CREATE TABLE orders (
    id                           text PRIMARY KEY,
    channel                      text NOT NULL,
    channel_order_ref            text NOT NULL,
    status                       text NOT NULL,
    shopper_id                   text NOT NULL REFERENCES shoppers (id),
    currency                     text NOT NULL,
    subtotal_minor               bigint NOT NULL,
    discount_minor               bigint NOT NULL,
    tax_minor                    bigint NOT NULL,
    shipping_minor               bigint NOT NULL,
    grand_total_minor            bigint NOT NULL,
    payment_method_type          text NOT NULL,
    payment_token                text NOT NULL DEFAULT '',
    payment_preauthorization_ref text NOT NULL DEFAULT '',
    discounts                    jsonb NOT NULL DEFAULT '[]',
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, channel_order_ref),
    CHECK (grand_total_minor = subtotal_minor - discount_minor + tax_minor + shipping_minor)
);
-- ListOrders: newest first with a keyset cursor, optionally filtered.
CREATE INDEX orders_newest ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_newest ON orders (status, created_at DESC, id DESC);
CREATE INDEX orders_channel_newest ON orders (channel, created_at DESC, id DESC);
CREATE INDEX orders_shopper_newest ON orders (shopper_id, created_at DESC, id DESC);

CREATE TABLE delivery_groups (
    id              text PRIMARY KEY,
    order_id        text NOT NULL REFERENCES orders (id),
    position        int NOT NULL,
    ref             text NOT NULL,
    recipient_name  text NOT NULL DEFAULT '',
    line1           text NOT NULL,
    line2           text NOT NULL DEFAULT '',
    city            text NOT NULL,
    region          text NOT NULL DEFAULT '',
    postal_code     text NOT NULL,
    country_code    text NOT NULL,
    delivery_method text NOT NULL DEFAULT '',
    shipping_minor  bigint NOT NULL DEFAULT 0 CHECK (shipping_minor >= 0),
    UNIQUE (order_id, ref)
);

CREATE TABLE order_lines (
    id                             text PRIMARY KEY,
    order_id                       text NOT NULL REFERENCES orders (id),
    delivery_group_id              text NOT NULL REFERENCES delivery_groups (id),
    position                       int NOT NULL,
    sku                            text NOT NULL,
    name                           text NOT NULL DEFAULT '',
    quantity_ordered               bigint NOT NULL CHECK (quantity_ordered >= 0),
    quantity_canceled              bigint NOT NULL DEFAULT 0 CHECK (quantity_canceled >= 0),
    quantity_allocated             bigint NOT NULL DEFAULT 0 CHECK (quantity_allocated >= 0),
    quantity_fulfilled             bigint NOT NULL DEFAULT 0 CHECK (quantity_fulfilled >= 0),
    quantity_return_initiated      bigint NOT NULL DEFAULT 0 CHECK (quantity_return_initiated >= 0),
    quantity_returned              bigint NOT NULL DEFAULT 0 CHECK (quantity_returned >= 0),
    unit_price_minor               bigint NOT NULL CHECK (unit_price_minor >= 0),
    discounts                      jsonb NOT NULL DEFAULT '[]',
    taxes                          jsonb NOT NULL DEFAULT '[]',
    allocated_order_discount_minor bigint NOT NULL DEFAULT 0,
    total_minor                    bigint NOT NULL
);
CREATE INDEX order_lines_order ON order_lines (order_id, position);

CREATE TABLE timeline_events (
    seq      bigserial PRIMARY KEY,
    order_id text NOT NULL REFERENCES orders (id),
    at       timestamptz NOT NULL DEFAULT now(),
    kind     text NOT NULL,
    summary  text NOT NULL DEFAULT '',
    actor    text NOT NULL DEFAULT ''
);
CREATE INDEX timeline_events_order ON timeline_events (order_id, at, seq);
