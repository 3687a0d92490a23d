-- Users, their roles and their tokens' owners, expiry and revocation. Derived like every read
-- model: `Store::open` folds the log again once this has been applied (tokens from before
-- users belong to a user of their own name; the bootstrap `admin` token's user is an admin).

CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    email      TEXT,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (email);

-- '' is "every project" / "every environment", so the key has no NULLs.
CREATE TABLE user_grants (
    user_name   TEXT NOT NULL,
    project     TEXT NOT NULL,
    environment TEXT NOT NULL,
    role        TEXT NOT NULL,
    PRIMARY KEY (user_name, project, environment)
);

ALTER TABLE tokens ADD COLUMN user_name TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at TEXT;
ALTER TABLE tokens ADD COLUMN revoked_at TEXT;
CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
