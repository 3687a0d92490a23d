-- PostgreSQL's dialect of sqlite/0001_init.sql: the same tables and columns (64-bit integers,
-- times as RFC 3339 text like every backend's), the append-only rules as triggers.

-- What every append-only trigger calls: refuse, saying why (the trigger's argument).
CREATE FUNCTION conveyor_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;

-- The event log: append-only, hash-chained. Everything else in this file is a read model
-- derived from it (see projection.rs) except `secrets`, whose values never enter the log.
CREATE TABLE events (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    data      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION conveyor_refuse('the event log is append-only');
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION conveyor_refuse('the event log is append-only');
-- TRUNCATE skips row triggers: refuse it as a statement.
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_refuse('the event log is append-only');

-- The head of the chain, so that deleting the newest events is detected too.
CREATE TABLE chain_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE projects (
    name          TEXT PRIMARY KEY,
    source_uri    TEXT NOT NULL,
    poll_seconds  BIGINT NOT NULL,
    heads         TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE runs (
    id            BIGINT PRIMARY KEY,
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
    run_id      BIGINT NOT NULL,
    job         TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    reason      TEXT,
    started_at  TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, job)
);

CREATE TABLE steps (
    run_id      BIGINT NOT NULL,
    job         TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   BIGINT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (run_id, job, attempt, idx)
);

CREATE TABLE artifacts (
    run_id  BIGINT NOT NULL,
    job     TEXT NOT NULL,
    path    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    BIGINT NOT NULL,
    PRIMARY KEY (run_id, job, path)
);

CREATE TABLE releases (
    id          BIGINT PRIMARY KEY,
    run_id      BIGINT NOT NULL UNIQUE,
    project     TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    branch      TEXT NOT NULL,
    artifacts   TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TRIGGER releases_no_update BEFORE UPDATE ON releases
    FOR EACH ROW EXECUTE FUNCTION conveyor_refuse('releases are immutable');

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
