-- Incoming supply (purchase orders, advance ship notices, pre-order releases) and the
-- fulfillment orders backordered against it.

-- Units of one SKU expected at one location on a date. `quantity` is what is expected in all;
-- `quantity_received` what has arrived so far (added to on hand as it arrived). A pre-order
-- release is supply too: the SKU's cap of units, expected on its release date, which orders
-- may be backordered against only before that date. status: open (expected), received (all
-- of it arrived), canceled (it will not come).
CREATE TABLE supply (
    id                text PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('purchase_order', 'advance_ship_notice', 'pre_order')),
    reference         text NOT NULL DEFAULT '',
    location_id       text NOT NULL REFERENCES locations (id),
    sku               text NOT NULL,
    quantity          bigint NOT NULL CHECK (quantity > 0),
    quantity_received bigint NOT NULL DEFAULT 0 CHECK (quantity_received >= 0),
    expected_date     date NOT NULL,
    status            text NOT NULL CHECK (status IN ('open', 'received', 'canceled')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX supply_open_sku ON supply (sku, expected_date, id) WHERE status = 'open';
-- One open pre-order per SKU and location: the cap is changed on it, not added beside it.
CREATE UNIQUE INDEX supply_one_pre_order ON supply (location_id, sku)
    WHERE kind = 'pre_order' AND status = 'open';

-- A backordered fulfillment order waits, with nothing reserved, for the supply it is promised
-- from (`supply_id`) and ships from the supply's location once units arrive; `promise_date` is
-- the supply's expected date. Both stay set after its release, as the record of the promise.
ALTER TABLE fulfillment_orders
    ADD COLUMN supply_id text REFERENCES supply (id),
    ADD COLUMN promise_date date,
    DROP CONSTRAINT fulfillment_orders_status_check,
    ADD CONSTRAINT fulfillment_orders_status_check CHECK (status IN
        ('backordered', 'allocated', 'accepted', 'picked', 'packed', 'shipped', 'rejected',
         'canceled'));
-- Release takes a supply's waiting backorders oldest first.
CREATE INDEX fulfillment_orders_backordered ON fulfillment_orders (supply_id, created_at, id)
    WHERE status = 'backordered';
