-- Delivery promises: when each location works an order (its time zone, daily order cut-off
-- and processing days), and how many business days carriers take by delivery method and
-- distance band. Existing locations get the defaults and keep working unchanged.

ALTER TABLE locations
    -- IANA time zone the cut-off is in.
    ADD COLUMN timezone          text    NOT NULL DEFAULT 'UTC',
    -- Orders placed at or after this local time start processing the next business day.
    ADD COLUMN cutoff_local_time time    NOT NULL DEFAULT '14:00',
    -- Business days from the start of processing until the parcel leaves.
    ADD COLUMN processing_days   integer NOT NULL DEFAULT 1
        CHECK (processing_days BETWEEN 0 AND 30);

-- The seeded locations work in their own cities' time zones (no-ops where they are absent).
UPDATE locations SET timezone = 'America/New_York' WHERE id = 'wh-east';
UPDATE locations SET timezone = 'America/Los_Angeles' WHERE id = 'wh-west';
UPDATE locations SET timezone = 'America/Chicago' WHERE id = 'store-chicago';

-- A carrier's business days by delivery method over distances from `from_km` up to the next
-- band of the same method; the method's last band has no end and also serves addresses whose
-- distance is unknown. Data rather than settings: a two-way table every replica reads alike
-- and operations can change (SQL, a migration) without a restart.
CREATE TABLE transit_times (
    delivery_method text    NOT NULL CHECK (delivery_method <> ''),
    from_km         integer NOT NULL CHECK (from_km >= 0),
    transit_days    integer NOT NULL CHECK (transit_days BETWEEN 0 AND 60),
    PRIMARY KEY (delivery_method, from_km)
);

INSERT INTO transit_times (delivery_method, from_km, transit_days) VALUES
    ('standard', 0, 2), ('standard', 300, 3), ('standard', 1000, 4), ('standard', 2000, 5),
    ('express', 0, 1), ('express', 300, 1), ('express', 1000, 2), ('express', 2000, 2),
    ('overnight', 0, 1), ('overnight', 300, 1), ('overnight', 1000, 1), ('overnight', 2000, 1);
