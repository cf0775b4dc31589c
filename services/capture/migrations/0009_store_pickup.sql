-- Store pickup: a delivery group with delivery method 'pickup' names the store (a fulfillment
-- location) where the shopper collects it; '' for every other method.
ALTER TABLE delivery_groups
    ADD COLUMN pickup_location_id text NOT NULL DEFAULT '';
