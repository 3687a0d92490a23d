-- The event log: append-only, hash-chained. Everything else in this file is a read model
-- derived from it (see projection.rs) except `secrets`, whose values never enter the log.
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    data      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;

-- The head of the chain, so that deleting the newest events is detected too.
CREATE TABLE chain_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE projects (
    name          TEXT PRIMARY KEY,
    source_uri    TEXT NOT NULL,
    poll_seconds  INTEGER NOT NULL,
    heads         TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    project       TEXT NOT NULL,
    source_uri    TEXT NOT NULL,
    commit_sha    TEXT NOT NULL,
    branch        TEXT NOT NULL,
    event         TEXT NOT NULL,
    status        TEXT NOT NULL,
    pipeline      TEXT NOT NULL,
    source_digest TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX runs_by_project ON runs (project, id);

CREATE TABLE jobs (
    run_id      INTEGER NOT NULL,
    job         TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    reason      TEXT,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, job)
);

CREATE TABLE steps (
    run_id      INTEGER NOT NULL,
    job         TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (run_id, job, attempt, idx)
);

CREATE TABLE artifacts (
    run_id  INTEGER NOT NULL,
    job     TEXT NOT NULL,
    path    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    PRIMARY KEY (run_id, job, path)
);

CREATE TABLE releases (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL UNIQUE,
    project     TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    branch      TEXT NOT NULL,
    artifacts   TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
BEGIN SELECT RAISE(ABORT, 'releases are immutable'); END;

CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    hash       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE secrets (
    project TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
