-- Adding items before fulfillment is a change too; its outcome says what was newly
-- authorized and the order's grand total afterwards (minor units of the order's currency).
ALTER TABLE changes DROP CONSTRAINT changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN
    ('cancel', 'return', 'receive_return', 'exchange', 'reship', 'appease', 'add_items'));
ALTER TABLE changes
    ADD COLUMN authorized_minor  bigint NOT NULL DEFAULT 0,
    ADD COLUMN grand_total_minor bigint NOT NULL DEFAULT 0;
