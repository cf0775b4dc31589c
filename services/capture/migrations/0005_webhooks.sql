-- Webhooks (README "Webhooks"): endpoints that receive the events of some types, one delivery
-- per (subscription, event) made by the fan-out from the event log, and every HTTP attempt.
CREATE TABLE webhook_subscriptions (
    subscription_id  text PRIMARY KEY,
    url              text NOT NULL,
    -- Event types or families ("shipment.*"); empty: every type.
    types            text[] NOT NULL DEFAULT '{}',
    state            text NOT NULL CHECK (state IN ('active', 'paused')),
    description      text NOT NULL DEFAULT '',
    -- The signing secret, sealed with a codec master key (oms_platform.codec.seal_secret):
    -- it is needed in clear to sign, so it cannot be hashed.
    secret_key_id    text NOT NULL,
    secret_sealed    bytea NOT NULL,
    -- The first sequence of the log this subscription receives (the head at creation + 1).
    from_seq         bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Deleted subscriptions stay (their delivery history with them) but receive nothing.
    deleted_at       timestamptz
);
CREATE INDEX webhook_subscriptions_live ON webhook_subscriptions (created_at)
    WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    -- Also the webhook-id header, the same on every attempt: receivers deduplicate on it.
    delivery_id      text PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES webhook_subscriptions (subscription_id),
    seq              bigint NOT NULL,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    order_id         text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'dead')),
    -- When a sender may take it next: due, backing off after a failure, or leased to a sender
    -- that is sending it now (the lease runs out if that sender dies, and another sends it).
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- The sender holding the lease; its outcome is recorded only while it still holds it.
    lease            text,
    -- Failures since the retry budget started, and when it started (the first attempt after
    -- creation or a redelivery): dead once the retry period has passed since then.
    failures         int NOT NULL DEFAULT 0,
    budget_started_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz,
    UNIQUE (subscription_id, seq)
);
-- What a sender claims: due pending deliveries, oldest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, seq)
    WHERE state = 'pending';
-- A delivery waits while an earlier one of its order is pending for the same subscription.
CREATE INDEX webhook_deliveries_order_pending ON webhook_deliveries (subscription_id, order_id, seq)
    WHERE state = 'pending';
-- Listing a subscription's deliveries, newest first (by state or not).
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (subscription_id, seq DESC);

CREATE TABLE webhook_attempts (
    delivery_id  text NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt      int NOT NULL,
    at           timestamptz NOT NULL,
    -- 0 when there was no answer (connection refused, timeout).
    http_status  int NOT NULL,
    error        text NOT NULL DEFAULT '',
    latency_ms   bigint NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
