-- Process exceptions raised by a service whose outbox could not deliver to an order's
-- workflow (a dead letter), beside those the workflow raises.
ALTER TABLE process_exceptions DROP CONSTRAINT process_exceptions_category_check;
ALTER TABLE process_exceptions ADD CONSTRAINT process_exceptions_category_check
    CHECK (category IN ('payment', 'fulfillment', 'inventory', 'fraud', 'carrier', 'invoicing',
                        'delivery_failed'));
