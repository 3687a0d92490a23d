-- Read model of canary analysis judgements (folded from deployment_judged events).
CREATE TABLE judgements (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER NOT NULL,
    metric        TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    traffic       INTEGER NOT NULL,
    summary       TEXT NOT NULL,
    evidence      TEXT NOT NULL,
    at            TEXT NOT NULL
);
CREATE INDEX judgements_by_deployment ON judgements (deployment_id, seq);
