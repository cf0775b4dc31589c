-- Subscriptions (README "Subscriptions"): plans, and the projection of each subscription's
-- workflow (subscription:<id>) that agents and shoppers read. The workflow decides; it tells
-- servicing what it did through RecordSubscriptionProgress, which writes the subscription,
-- its cycles and its changes in one transaction.
CREATE TABLE plans (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    -- [{sku, name, quantity, unit_price_minor}], in the order given.
    items          jsonb NOT NULL,
    currency       text NOT NULL,
    shipping_minor bigint NOT NULL CHECK (shipping_minor >= 0),
    tax_minor      bigint NOT NULL CHECK (tax_minor >= 0),
    cadence_kind   text NOT NULL CHECK (cadence_kind IN ('monthly', 'weeks', 'minutes')),
    cadence_value  int NOT NULL,
    at_local_time  text NOT NULL,
    timezone       text NOT NULL,
    created_at     timestamptz NOT NULL
);
-- ListPlans: oldest first.
CREATE INDEX plans_by_created ON plans (created_at, id);

CREATE TABLE subscriptions (
    id                      text PRIMARY KEY,
    plan_id                 text NOT NULL REFERENCES plans (id),
    channel                 text NOT NULL,
    -- The subscriber's email as given, and as ListSubscriptions filters on it (lower case).
    email                   text NOT NULL,
    email_normalized        text NOT NULL,
    subscriber_name         text NOT NULL DEFAULT '',
    phone                   text NOT NULL DEFAULT '',
    channel_customer_id     text NOT NULL DEFAULT '',
    -- {line1, line2, city, region, postal_code, country_code}
    delivery_address        jsonb NOT NULL,
    delivery_method         text NOT NULL DEFAULT '',
    -- {type, token, preauthorization_ref}: masked on the way out but to oms's own processes.
    payment_method          jsonb NOT NULL,
    status                  text NOT NULL
                                CHECK (status IN ('active', 'paused', 'past_due', 'canceled')),
    start_at                timestamptz NOT NULL,
    next_cycle              int NOT NULL DEFAULT 1,
    next_cycle_at           timestamptz,
    paused_until            timestamptz,
    skipped_cycles          int[] NOT NULL DEFAULT '{}',
    pending_plan_id         text NOT NULL DEFAULT '',
    pending_plan_from_cycle int NOT NULL DEFAULT 0,
    cancel_at_period_end    boolean NOT NULL DEFAULT false,
    suspended_reason        text NOT NULL DEFAULT '',
    -- The SubscriptionInput the workflow was started with: what starting it again takes
    -- (after a dead letter is discarded, or to move it to another cluster).
    workflow_input          jsonb NOT NULL,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL
);
-- ListSubscriptions: newest first, by any one filter, with (created_at, id) as the cursor.
CREATE INDEX subscriptions_by_created ON subscriptions (created_at DESC, id DESC);
CREATE INDEX subscriptions_by_email
    ON subscriptions (email_normalized, created_at DESC, id DESC);
CREATE INDEX subscriptions_by_plan ON subscriptions (plan_id, created_at DESC, id DESC);
CREATE INDEX subscriptions_by_status ON subscriptions (status, created_at DESC, id DESC);

CREATE TABLE subscription_cycles (
    subscription_id       text NOT NULL REFERENCES subscriptions (id),
    number                int NOT NULL CHECK (number >= 1),
    due_at                timestamptz,
    status                text NOT NULL
                              CHECK (status IN ('scheduled', 'skipped', 'ordered', 'past_due',
                                                'paid', 'failed')),
    order_id              text NOT NULL DEFAULT '',
    plan_id               text NOT NULL DEFAULT '',
    amount_minor          bigint NOT NULL DEFAULT 0,
    currency              text NOT NULL DEFAULT '',
    payment_attempts      int NOT NULL DEFAULT 0,
    next_payment_retry_at timestamptz,
    decline_reason        text NOT NULL DEFAULT '',
    updated_at            timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, number)
);

CREATE TABLE subscription_changes (
    id               text PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES subscriptions (id),
    kind             text NOT NULL,
    actor            text NOT NULL,
    reason           text NOT NULL DEFAULT '',
    summary          text NOT NULL,
    effective_cycle  int NOT NULL DEFAULT 0,
    at               timestamptz NOT NULL,
    -- Ties on `at` keep the order the changes were recorded in.
    recorded         bigserial
);
CREATE INDEX subscription_changes_by_subscription
    ON subscription_changes (subscription_id, at, recorded);
