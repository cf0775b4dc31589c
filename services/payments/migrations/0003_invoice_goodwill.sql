-- Goodwill given before anything was charged is taken off the invoices that follow.
ALTER TABLE invoices ADD COLUMN goodwill_minor bigint NOT NULL DEFAULT 0
    CHECK (goodwill_minor >= 0);
