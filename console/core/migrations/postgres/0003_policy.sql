-- Access policy versions. Every accepted policy is kept; the current one is the
-- highest version of its network (rollback inserts a copy of an old one). A network
-- without any row runs the built-in default policy (version 0, allow all; see
-- docs/policy.md). Column-for-column identical on SQLite and PostgreSQL.

CREATE TABLE policy_versions (
    network_id    TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    version       BIGINT NOT NULL,
    text          TEXT NOT NULL,
    author        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- human-readable summary of the edges this version added and removed
    summary       TEXT NOT NULL,
    -- set when this version was made by rolling back to that version
    rollback_of   BIGINT,
    PRIMARY KEY (network_id, version)
);
