-- A subscription's cycle orders (README "Subscriptions"): the subscription and the cycle an
-- order was placed for, set only by the subscription's workflow through SubmitOrder; '' and 0
-- for every other order. Agents find a subscription's orders by them.
ALTER TABLE orders
    ADD COLUMN subscription_id text NOT NULL DEFAULT '',
    ADD COLUMN subscription_cycle int NOT NULL DEFAULT 0;

-- Only subscription orders are indexed: the rest (nearly all) cost nothing.
CREATE INDEX orders_subscription ON orders (subscription_id, subscription_cycle)
    WHERE subscription_id <> '';
