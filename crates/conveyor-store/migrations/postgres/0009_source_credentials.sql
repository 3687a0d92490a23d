-- The credentials of a project's source URL (`user:token`), kept apart like secret values: the
-- log and every read model hold the URL without them, and the server puts them back only to
-- fetch. Not a read model: a rebuild leaves this table alone.
CREATE TABLE source_credentials (
    project     TEXT PRIMARY KEY,
    credentials TEXT NOT NULL
);
