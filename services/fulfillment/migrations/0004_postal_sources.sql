-- Where each postal coordinate came from: 'seed' for the prefixes 0002 seeded, otherwise the
-- data set a load (`oms postal load`) read, e.g. 'zipcodes 3.0.0' or a GeoNames file's name.
-- A load replaces the rows its country had from any load and leaves the seeded prefixes, so
-- a code the data set lacks still falls back to its prefix.
ALTER TABLE postal_coordinates ADD COLUMN source text NOT NULL DEFAULT 'seed';
