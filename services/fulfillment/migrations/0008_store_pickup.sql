-- Store pickup: a delivery group with delivery method 'pickup' names the store the shopper
-- collects at; its fulfillment order is set aside there (ready_for_pickup, with a deadline)
-- and either collected (picked_up) or, past the deadline, canceled by the pickup sweeper.
ALTER TABLE delivery_groups
    ADD COLUMN pickup_location_id text NOT NULL DEFAULT '';

ALTER TABLE fulfillment_orders
    DROP CONSTRAINT fulfillment_orders_status_check,
    ADD CONSTRAINT fulfillment_orders_status_check CHECK (status IN
        ('backordered', 'allocated', 'accepted', 'picked', 'packed', 'shipped', 'rejected',
         'canceled', 'ready_for_pickup', 'picked_up')),
    ADD COLUMN pickup_location_id  text NOT NULL DEFAULT '',
    ADD COLUMN ready_for_pickup_at timestamptz,
    ADD COLUMN pickup_deadline     timestamptz;

-- What the pickup sweeper looks for: fulfillment orders waiting at a store, by deadline.
CREATE INDEX fulfillment_orders_pickup_deadline ON fulfillment_orders (pickup_deadline)
    WHERE status = 'ready_for_pickup';
