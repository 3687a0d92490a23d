-- Leases: what only one server may do at a time (drive a run, a deployment, the poller), held
-- by one server until `expires_ms` (milliseconds since the Unix epoch) unless it renews it. Not
-- facts, so not in the log: a lease that changes hands is recorded there by whoever takes it.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
