-- Environment protection set on the server (not by a commit), the people who wrote each
-- deployment's change, and one approval per person. Derived: the read models are folded again.

CREATE TABLE environment_protections (
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    -- The whole rule set (conveyor_api::EnvironmentProtection as JSON).
    protection  TEXT NOT NULL,
    PRIMARY KEY (project, environment)
);

-- Who authored a deployment's commits (user names, or emails no user has), in order.
CREATE TABLE deployment_authors (
    deployment_id BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    author        TEXT NOT NULL,
    PRIMARY KEY (deployment_id, idx)
);

CREATE UNIQUE INDEX deployment_approvals_once ON deployment_approvals (deployment_id, approver);
