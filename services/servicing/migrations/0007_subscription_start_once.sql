-- A subscription's workflow input was kept beside the subscription, but nothing reads it: the
-- outbox row that starts the workflow carries it, and the subscription's own columns say the
-- rest. Kept, it was one more copy of the payment method token.
ALTER TABLE subscriptions DROP COLUMN workflow_input;
