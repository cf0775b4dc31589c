-- Seed data for the dev stack and tests: three locations, five SKUs, and the coordinates of
-- the three-digit ZIP prefixes of big US cities.

INSERT INTO locations
    (id, name, type, address_line1, city, region, postal_code, country_code,
     latitude, longitude, priority, enabled, daily_capacity)
VALUES
    ('wh-east', 'East Coast Warehouse', 'warehouse', '1 Port Street', 'Newark', 'NJ', '07102', 'US',
     40.7357, -74.1724, 1, true, NULL),
    ('wh-west', 'West Coast Warehouse', 'warehouse', '500 Distribution Way', 'Reno', 'NV', '89502', 'US',
     39.5296, -119.8138, 1, true, NULL),
    ('store-chicago', 'Chicago Store', 'store', '800 W Madison St', 'Chicago', 'IL', '60607', 'US',
     41.8818, -87.6470, 2, true, 200);

-- Generous stock at the warehouses so demos and benchmarks do not run dry; a few at the store.
INSERT INTO inventory_levels (location_id, sku, on_hand, reserved, safety_stock)
SELECT location_id, sku, on_hand, 0, 0
FROM (VALUES ('wh-east', 100000), ('wh-west', 100000)) AS w (location_id, on_hand)
CROSS JOIN (VALUES ('SKU-TSHIRT-M'), ('SKU-TSHIRT-L'), ('SKU-HOODIE-M'), ('SKU-MUG'), ('SKU-CAP')) AS s (sku);

INSERT INTO inventory_levels (location_id, sku, on_hand, reserved, safety_stock) VALUES
    ('store-chicago', 'SKU-TSHIRT-M', 10, 0, 2),
    ('store-chicago', 'SKU-TSHIRT-L', 10, 0, 2),
    ('store-chicago', 'SKU-HOODIE-M', 5, 0, 1),
    ('store-chicago', 'SKU-MUG', 20, 0, 2),
    ('store-chicago', 'SKU-CAP', 15, 0, 2);

INSERT INTO postal_coordinates (country_code, postal_prefix, latitude, longitude) VALUES
    ('US', '100', 40.7128, -74.0060),   -- New York
    ('US', '021', 42.3601, -71.0589),   -- Boston
    ('US', '191', 39.9526, -75.1652),   -- Philadelphia
    ('US', '200', 38.9072, -77.0369),   -- Washington DC
    ('US', '303', 33.7490, -84.3880),   -- Atlanta
    ('US', '331', 25.7617, -80.1918),   -- Miami
    ('US', '606', 41.8781, -87.6298),   -- Chicago
    ('US', '752', 32.7767, -96.7970),   -- Dallas
    ('US', '770', 29.7604, -95.3698),   -- Houston
    ('US', '802', 39.7392, -104.9903),  -- Denver
    ('US', '850', 33.4484, -112.0740),  -- Phoenix
    ('US', '900', 34.0522, -118.2437),  -- Los Angeles
    ('US', '941', 37.7749, -122.4194),  -- San Francisco
    ('US', '981', 47.6062, -122.3321),  -- Seattle
    ('US', '071', 40.7357, -74.1724),   -- Newark
    ('US', '895', 39.5296, -119.8138);  -- Reno
