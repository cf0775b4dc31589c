-- An exchange is a return of the old item: the same rule decides it. Whether the rule's
-- restocking fee is charged on an exchange too is the rule's to say (by default it is not,
-- as exchanges had no fee before).

ALTER TABLE return_policy_rules
    ADD COLUMN fee_on_exchange boolean NOT NULL DEFAULT false;
