-- Read models without JSON columns: every list or map a read model holds becomes a child table
-- with an explicit order, so the projection's SQL is the same on every backend. The rows are
-- derived: `Store::open` rebuilds the read models from the log once this has been applied.

-- A project's branch heads at registration (a map: ordered by branch when read).
CREATE TABLE project_heads (
    project TEXT NOT NULL,
    branch  TEXT NOT NULL,
    sha     TEXT NOT NULL,
    PRIMARY KEY (project, branch)
);
ALTER TABLE projects DROP COLUMN heads;

-- A release's artifacts, in the order the release lists them; immutable like the release.
CREATE TABLE release_artifacts (
    release_id BIGINT NOT NULL,
    idx        BIGINT NOT NULL,
    path       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    PRIMARY KEY (release_id, idx)
);
CREATE TRIGGER release_artifacts_no_update BEFORE UPDATE ON release_artifacts
    FOR EACH ROW EXECUTE FUNCTION conveyor_refuse('releases are immutable');
ALTER TABLE releases DROP COLUMN artifacts;

-- A deployment's plan, one row per phase.
CREATE TABLE deployment_phases (
    deployment_id BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    phase         TEXT NOT NULL,
    PRIMARY KEY (deployment_id, idx)
);
-- The gates a deployment waits on now.
CREATE TABLE deployment_gates (
    deployment_id BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    gate          TEXT NOT NULL,
    PRIMARY KEY (deployment_id, idx)
);
-- Who approved a deployment, in order.
CREATE TABLE deployment_approvals (
    deployment_id BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    approver      TEXT NOT NULL,
    PRIMARY KEY (deployment_id, idx)
);
-- Each version a deployment started (even with no instances recorded) ...
CREATE TABLE deployment_versions (
    deployment_id BIGINT NOT NULL,
    version       TEXT NOT NULL,
    PRIMARY KEY (deployment_id, version)
);
-- ... and where its instances run, in order.
CREATE TABLE deployment_instances (
    deployment_id BIGINT NOT NULL,
    version       TEXT NOT NULL,
    idx           BIGINT NOT NULL,
    addr          TEXT NOT NULL,
    -- The target's own name for the instance (a local pid, as text), if it runs.
    instance_id   TEXT,
    PRIMARY KEY (deployment_id, version, idx)
);
ALTER TABLE deployments DROP COLUMN phases;
ALTER TABLE deployments DROP COLUMN gates;
ALTER TABLE deployments DROP COLUMN approvals;
ALTER TABLE deployments DROP COLUMN instances;

-- A run's jobs in pipeline order (explicit, instead of insertion order).
ALTER TABLE jobs ADD COLUMN idx BIGINT NOT NULL DEFAULT 0;

-- Which events belong to a project environment's flag history (the data stays in `events`).
CREATE TABLE flag_history (
    seq         BIGINT PRIMARY KEY,
    project     TEXT NOT NULL,
    environment TEXT NOT NULL
);
CREATE INDEX flag_history_by_environment ON flag_history (project, environment, seq);
