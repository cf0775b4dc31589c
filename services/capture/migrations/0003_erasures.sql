-- Erasures: that a shopper's personal data was erased, who asked and when; never what.
CREATE TABLE erasures (
    id             text PRIMARY KEY,
    -- One erasure per shopper: asking again answers with this record.
    shopper_id     text NOT NULL UNIQUE REFERENCES shoppers (id),
    -- SHA-256 of the shopper's normalized email, so a repeated request by email still finds
    -- this record once the email itself is gone (a digest, not the address).
    email_sha256   bytea,
    requested_by   text NOT NULL,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once every service has erased and the orders' Temporal keys are destroyed.
    completed_at   timestamptz,
    order_ids      text[] NOT NULL,
    canceled_count int NOT NULL DEFAULT 0
);
CREATE INDEX erasures_email ON erasures (email_sha256);
