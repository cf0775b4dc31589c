-- Split payments, billing address and fraud screening on orders; an index for ListOrders'
-- SKU filter that keeps "newest first" one index scan however many orders there are.

ALTER TABLE orders
    ADD COLUMN additional_payment_methods jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN billing_address jsonb,
    ADD COLUMN fraud_reasons text[] NOT NULL DEFAULT '{}';

-- Each line carries its order's created_at, so orders with a SKU come newest first straight
-- from (sku, order_created_at, order_id) without sorting every match.
ALTER TABLE order_lines ADD COLUMN order_created_at timestamptz;
UPDATE order_lines l SET order_created_at = o.created_at FROM orders o WHERE o.id = l.order_id;
ALTER TABLE order_lines ALTER COLUMN order_created_at SET NOT NULL;
CREATE INDEX order_lines_sku_newest ON order_lines (sku, order_created_at DESC, order_id DESC);
