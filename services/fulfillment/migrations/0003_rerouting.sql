-- Rejections, line cancels and moves that route again; location groups and daily capacity;
-- inventory adjustments; routing decisions kept for the order's record.

-- Location groups, e.g. "EU warehouses"; a location may belong to several.
CREATE TABLE location_groups (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE location_group_members (
    location_group_id text NOT NULL REFERENCES location_groups (id) ON DELETE CASCADE,
    location_id       text NOT NULL REFERENCES locations (id),
    PRIMARY KEY (location_group_id, location_id)
);
CREATE INDEX location_group_members_location ON location_group_members (location_id);

INSERT INTO location_groups (id, name) VALUES
    ('us-warehouses', 'US warehouses'),
    ('us-stores', 'US stores');
INSERT INTO location_group_members (location_group_id, location_id) VALUES
    ('us-warehouses', 'wh-east'),
    ('us-warehouses', 'wh-west'),
    ('us-stores', 'store-chicago');

-- Fulfillment orders a location took per UTC day, held against its daily capacity with a
-- conditional update (like reservations), so two routings cannot both take the last slot.
CREATE TABLE location_daily_load (
    location_id        text NOT NULL REFERENCES locations (id),
    day                date NOT NULL,
    fulfillment_orders integer NOT NULL DEFAULT 0 CHECK (fulfillment_orders >= 0),
    PRIMARY KEY (location_id, day)
);

-- Where each routed delivery group goes, so rejected units can be routed again.
CREATE TABLE delivery_groups (
    order_id          text NOT NULL,
    delivery_group_id text NOT NULL,
    address_line1     text NOT NULL DEFAULT '',
    address_line2     text NOT NULL DEFAULT '',
    city              text NOT NULL DEFAULT '',
    region            text NOT NULL DEFAULT '',
    postal_code       text NOT NULL DEFAULT '',
    country_code      text NOT NULL DEFAULT '',
    delivery_method   text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, delivery_group_id)
);

-- A line's quantity is what the fulfillment order still ships or has shipped; units taken off
-- are counted by why. A line whose units all went elsewhere keeps its row at quantity 0.
ALTER TABLE fulfillment_order_lines
    DROP CONSTRAINT fulfillment_order_lines_quantity_check,
    ADD CONSTRAINT fulfillment_order_lines_quantity_check CHECK (quantity >= 0),
    ADD COLUMN quantity_rejected bigint NOT NULL DEFAULT 0 CHECK (quantity_rejected >= 0),
    ADD COLUMN quantity_canceled bigint NOT NULL DEFAULT 0 CHECK (quantity_canceled >= 0),
    ADD COLUMN quantity_moved    bigint NOT NULL DEFAULT 0 CHECK (quantity_moved >= 0);

-- Every unit taken off a fulfillment order line, and why. Rejections here are what later
-- routing of the same order lines excludes.
CREATE TABLE fulfillment_line_changes (
    id                   bigserial PRIMARY KEY,
    kind                 text NOT NULL CHECK (kind IN ('rejected', 'canceled', 'moved')),
    order_id             text NOT NULL,
    fulfillment_order_id text NOT NULL REFERENCES fulfillment_orders (id),
    location_id          text NOT NULL REFERENCES locations (id),
    order_line_id        text NOT NULL,
    quantity             bigint NOT NULL CHECK (quantity > 0),
    reason               text NOT NULL DEFAULT '',
    idempotency_key      text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fulfillment_line_changes_order ON fulfillment_line_changes (order_id, kind);

-- Reservations remember the request that made them; units moved to another location leave
-- a 'transferred' row behind.
ALTER TABLE reservations
    ADD COLUMN idempotency_key text NOT NULL DEFAULT '',
    DROP CONSTRAINT reservations_status_check,
    ADD CONSTRAINT reservations_status_check
        CHECK (status IN ('reserved', 'released', 'transferred', 'fulfilled'));

-- What happened to on hand, and why.
CREATE TABLE inventory_adjustments (
    id              bigserial PRIMARY KEY,
    location_id     text NOT NULL REFERENCES locations (id),
    sku             text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('received', 'counted', 'damaged')),
    quantity        bigint NOT NULL CHECK (quantity >= 0),
    reason          text NOT NULL,
    on_hand_before  bigint NOT NULL,
    on_hand_after   bigint NOT NULL,
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inventory_adjustments_level ON inventory_adjustments (location_id, sku, created_at);

-- How one delivery group was routed: the plans considered, locations excluded, the choice.
CREATE TABLE routing_decisions (
    id                          bigserial PRIMARY KEY,
    order_id                    text NOT NULL,
    delivery_group_id           text NOT NULL,
    trigger                     text NOT NULL CHECK (trigger IN ('order', 'rejection', 'move')),
    source_fulfillment_order_id text NOT NULL DEFAULT '',
    summary                     text[] NOT NULL,
    chosen_location_ids         text[] NOT NULL,
    alternatives                jsonb NOT NULL,
    excluded                    jsonb NOT NULL,
    unallocated                 jsonb NOT NULL,
    idempotency_key             text NOT NULL,
    decided_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routing_decisions_order ON routing_decisions (order_id, id);
