-- A delivery group's new address routes its unshipped units again: a routing decision of its own.
ALTER TABLE routing_decisions DROP CONSTRAINT routing_decisions_trigger_check;
ALTER TABLE routing_decisions ADD CONSTRAINT routing_decisions_trigger_check
    CHECK (trigger IN ('order', 'rejection', 'move', 'address_change'));
