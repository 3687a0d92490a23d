-- The web UI's reads: the audit trail filtered by kind, a release's deployments, runs by status.
CREATE INDEX events_by_kind ON events (kind, seq);
CREATE INDEX deployments_by_release ON deployments (release_id, id);
CREATE INDEX runs_by_status ON runs (project, status, id);
