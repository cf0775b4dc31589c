-- Per-subject data keys of the Temporal payload codec (oms_platform/codec.py). A subject is an
-- order's workflow id; its payloads are encrypted with its own data key, kept here wrapped
-- (encrypted) by a master key that never leaves the processes' key file. Destroying the data
-- key (crypto-shredding) makes every payload of that order unreadable, wherever it was copied.
CREATE TABLE data_keys (
    subject     text PRIMARY KEY,
    -- The master key that wrapped the data key; NULL once shredded.
    kek_id      text,
    -- nonce || AES-256-GCM(data key), bound to subject and kek_id; NULL once shredded.
    wrapped     bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when the key was destroyed: the row stays as a tombstone so decoding fails with a
    -- clear reason and no new key is ever made for the subject.
    shredded_at timestamptz,
    CHECK ((wrapped IS NULL) = (kek_id IS NULL)),
    CHECK ((wrapped IS NULL) = (shredded_at IS NOT NULL))
);
