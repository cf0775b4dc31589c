-- Checkout reservations: a cart's units held for a while before there is an order. Held units
-- are counted in inventory_levels.reserved like a fulfillment order's, so every reader of
-- availability (GetAvailability, routing, other reservations) sees them at once through the
-- one formula on_hand - reserved - safety_stock. Readers subtract the holds that expired but
-- were not released yet; writers release those first.

-- One cart's reservation. status: held (units held until expires_at), consumed (an order took
-- the units: order_id), released (given back), expired (past expires_at, units given back).
CREATE TABLE checkout_reservations (
    id              text PRIMARY KEY,
    status          text NOT NULL CHECK (status IN ('held', 'consumed', 'released', 'expired')),
    -- The cart as asked for: SKUs and quantities in request order.
    skus            text[] NOT NULL,
    quantities      bigint[] NOT NULL,
    expires_at      timestamptz NOT NULL,
    order_id        text NOT NULL DEFAULT '',
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- What the sweeper looks for: held reservations by expiry.
CREATE INDEX checkout_reservations_held ON checkout_reservations (expires_at)
    WHERE status = 'held';

-- Units of one cart line held at one location. `held` is true while the reservation is held;
-- `expires_at` is the reservation's, kept here so readers find expired holds of a level by
-- the partial index alone.
CREATE TABLE checkout_holds (
    reservation_id text NOT NULL REFERENCES checkout_reservations (id),
    line_index     integer NOT NULL CHECK (line_index >= 0),
    location_id    text NOT NULL REFERENCES locations (id),
    sku            text NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    expires_at     timestamptz NOT NULL,
    held           boolean NOT NULL DEFAULT true,
    PRIMARY KEY (reservation_id, line_index, location_id)
);
CREATE INDEX checkout_holds_live ON checkout_holds (location_id, sku, expires_at) WHERE held;
CREATE INDEX checkout_holds_live_sku ON checkout_holds (sku) WHERE held;
