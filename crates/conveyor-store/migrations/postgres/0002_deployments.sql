-- Read model of deployments (folded from the deployment_* events).
CREATE TABLE deployments (
    id            BIGINT PRIMARY KEY,
    project       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    release_id    BIGINT NOT NULL,
    status        TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    author        TEXT NOT NULL,
    rollback_of   BIGINT,
    phases        TEXT NOT NULL,
    phase_index   BIGINT,
    phase         TEXT,
    traffic       BIGINT NOT NULL,
    gates         TEXT NOT NULL,
    approvals     TEXT NOT NULL,
    instances     TEXT NOT NULL,
    reason        TEXT,
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX deployments_by_environment ON deployments (project, environment, id);
