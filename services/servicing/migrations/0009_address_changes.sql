-- Sending a delivery group to a new address before it shipped is a change too.
ALTER TABLE changes DROP CONSTRAINT changes_kind_check;
ALTER TABLE changes ADD CONSTRAINT changes_kind_check CHECK (kind IN
    ('cancel', 'return', 'receive_return', 'exchange', 'reship', 'appease', 'add_items',
     'address_change'));
-- Its outcome says whether the group's units moved to other locations, and where they ship from.
ALTER TABLE changes
    ADD COLUMN rerouted     boolean NOT NULL DEFAULT false,
    ADD COLUMN location_ids text[] NOT NULL DEFAULT '{}';
