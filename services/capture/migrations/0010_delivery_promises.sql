-- The day each delivery group, and the whole order (the latest of its groups'), is promised
-- to arrive, as the lifecycle reports it from fulfillment's promises.
ALTER TABLE delivery_groups ADD COLUMN promised_delivery_date date;
ALTER TABLE orders ADD COLUMN promised_delivery_date date;

-- Late orders: undelivered and not canceled, by promise. Only orders that can still be late
-- are in it, so listing and counting them reads about as many entries as there are.
CREATE INDEX orders_late ON orders (promised_delivery_date)
    WHERE status NOT IN ('fulfilled', 'canceled') AND promised_delivery_date IS NOT NULL;
