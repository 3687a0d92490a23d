-- Secret values sealed at rest (XChaCha20-Poly1305, see secrets.rs): `value` holds the base64
-- ciphertext, `nonce` its base64 24-byte nonce and `key_id` the key that sealed it. A row whose
-- `key_id` is NULL still holds a plaintext value from before this migration: `Store::open`
-- seals it under the current key.
ALTER TABLE secrets ADD COLUMN key_id TEXT;
ALTER TABLE secrets ADD COLUMN nonce TEXT;

-- Signed checkpoints of the event log: `envelope` is the DSSE envelope (payload type
-- application/vnd.conveyor.checkpoint+json) stating that event `seq` has hash `head_hash`,
-- exactly as also appended to the export file outside the database. Only the signature is
-- trusted when verifying; the other columns are for lookups.
CREATE TABLE checkpoints (
    seq       BIGINT PRIMARY KEY,
    head_hash TEXT NOT NULL,
    at        TEXT NOT NULL,
    envelope  TEXT NOT NULL
);
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION conveyor_refuse('checkpoints are append-only');
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION conveyor_refuse('checkpoints are append-only');
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_refuse('checkpoints are append-only');
