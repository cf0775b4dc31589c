-- The delivery promise each fulfillment order carries: worked out from its route when it is
-- created, and again from the ship date (or the carrier's estimate) when a parcel leaves.
ALTER TABLE fulfillment_orders ADD COLUMN promised_delivery_date date;

-- The day the carrier expects to deliver a parcel, when the shipment report gave one.
ALTER TABLE shipments ADD COLUMN estimated_delivery_date date;
