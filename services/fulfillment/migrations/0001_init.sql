-- Fulfillment: locations, inventory, reservations, fulfillment orders and shipments.
-- Tables are unqualified: the migration runs with search_path set to the fulfillment schema.

-- A place inventory ships from.
CREATE TABLE locations (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    type           text NOT NULL CHECK (type IN ('warehouse', 'store', 'drop_ship')),
    address_line1  text NOT NULL DEFAULT '',
    address_line2  text NOT NULL DEFAULT '',
    city           text NOT NULL DEFAULT '',
    region         text NOT NULL DEFAULT '',
    postal_code    text NOT NULL DEFAULT '',
    country_code   text NOT NULL DEFAULT '',
    latitude       double precision NOT NULL,
    longitude      double precision NOT NULL,
    -- Lower wins among otherwise equal routing choices.
    priority       integer NOT NULL DEFAULT 100,
    enabled        boolean NOT NULL DEFAULT true,
    -- Fulfillment orders the location can take per day; NULL means no limit.
    daily_capacity integer CHECK (daily_capacity IS NULL OR daily_capacity >= 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Stock of one SKU at one location. available to fulfill = on_hand - reserved - safety_stock.
CREATE TABLE inventory_levels (
    location_id  text NOT NULL REFERENCES locations (id),
    sku          text NOT NULL,
    on_hand      bigint NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved     bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    safety_stock bigint NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (location_id, sku)
);
CREATE INDEX inventory_levels_sku ON inventory_levels (sku);

-- The part of one order's delivery group that one location ships.
CREATE TABLE fulfillment_orders (
    id                text PRIMARY KEY,
    order_id          text NOT NULL,
    delivery_group_id text NOT NULL,
    location_id       text NOT NULL REFERENCES locations (id),
    status            text NOT NULL CHECK (status IN
                        ('allocated', 'accepted', 'picked', 'packed', 'shipped', 'rejected', 'canceled')),
    cancel_reason     text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fulfillment_orders_order ON fulfillment_orders (order_id);
CREATE INDEX fulfillment_orders_location ON fulfillment_orders (location_id, status);
CREATE INDEX fulfillment_orders_created ON fulfillment_orders (created_at, id);

-- A quantity of one order line that one fulfillment order ships.
CREATE TABLE fulfillment_order_lines (
    fulfillment_order_id text NOT NULL REFERENCES fulfillment_orders (id),
    line_number          integer NOT NULL,
    order_line_id        text NOT NULL,
    sku                  text NOT NULL,
    quantity             bigint NOT NULL CHECK (quantity > 0),
    quantity_shipped     bigint NOT NULL DEFAULT 0
                           CHECK (quantity_shipped >= 0 AND quantity_shipped <= quantity),
    PRIMARY KEY (fulfillment_order_id, order_line_id)
);

-- Units held (reserved), handed back (released) or shipped (fulfilled) for a fulfillment
-- order line. A partial shipment splits a reserved row: the shipped part becomes its own
-- fulfilled row, so each row's quantity is entirely in its status.
CREATE TABLE reservations (
    id                   bigserial PRIMARY KEY,
    order_id             text NOT NULL,
    fulfillment_order_id text NOT NULL REFERENCES fulfillment_orders (id),
    order_line_id        text NOT NULL,
    location_id          text NOT NULL REFERENCES locations (id),
    sku                  text NOT NULL,
    quantity             bigint NOT NULL CHECK (quantity > 0),
    status               text NOT NULL CHECK (status IN ('reserved', 'released', 'fulfilled')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_fulfillment_order ON reservations (fulfillment_order_id, status);
CREATE INDEX reservations_order ON reservations (order_id);

-- One parcel handed to a carrier.
CREATE TABLE shipments (
    id                   text PRIMARY KEY,
    fulfillment_order_id text NOT NULL REFERENCES fulfillment_orders (id),
    carrier              text NOT NULL DEFAULT '',
    service              text NOT NULL DEFAULT '',
    tracking_number      text NOT NULL DEFAULT '',
    shipped_at           timestamptz NOT NULL DEFAULT now(),
    delivered_at         timestamptz
);
CREATE INDEX shipments_fulfillment_order ON shipments (fulfillment_order_id, shipped_at);

-- Units of one order line inside a parcel.
CREATE TABLE shipment_items (
    shipment_id   text NOT NULL REFERENCES shipments (id),
    item_number   integer NOT NULL,
    order_line_id text NOT NULL,
    quantity      bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (shipment_id, order_line_id)
);

-- Approximate coordinates of postal code prefixes, for distance-based routing. The longest
-- matching prefix of a recipient's postal code wins.
CREATE TABLE postal_coordinates (
    country_code  text NOT NULL,
    postal_prefix text NOT NULL,
    latitude      double precision NOT NULL,
    longitude     double precision NOT NULL,
    PRIMARY KEY (country_code, postal_prefix)
);
