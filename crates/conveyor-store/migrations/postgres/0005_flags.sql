-- Read models of feature flags (folded from the flags_* and flag_* events).
-- The current flagd definition of each project environment.
CREATE TABLE flag_sets (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    definition  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (project, environment)
);
-- When each flag was added and last changed, for the stale-flag report.
CREATE TABLE flag_ages (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    flag        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    changed_at  TEXT NOT NULL,
    PRIMARY KEY (project, environment, flag)
);
-- Evaluation API keys: only their SHA-256; a key selects one project environment.
CREATE TABLE flag_keys (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
-- Changes to apply at a given time.
CREATE TABLE flag_schedules (
    id          BIGINT PRIMARY KEY,
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    flag        TEXT NOT NULL,
    due_at      TEXT NOT NULL,
    patch       TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    status      TEXT NOT NULL,
    outcome     TEXT,
    finished_at TEXT
);
CREATE INDEX flag_schedules_pending ON flag_schedules (status, due_at);
