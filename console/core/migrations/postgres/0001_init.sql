-- zmesh console schema, PostgreSQL flavour. Kept column-for-column identical to the
-- SQLite file: the store runs one set of SQL text against both.
-- Booleans are BIGINT 0/1, timestamps are Unix milliseconds, lists are JSON text.

CREATE TABLE networks (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    prefix_v4     TEXT NOT NULL,
    prefix_v6     TEXT NOT NULL,
    -- bumped in the same transaction as every change peers can see
    revision      BIGINT NOT NULL DEFAULT 0,
    -- next overlay host number to hand out; never reused until the space runs out
    next_host     BIGINT NOT NULL DEFAULT 1,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE enroll_keys (
    id              TEXT PRIMARY KEY,
    network_id      TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    secret_hash     TEXT NOT NULL UNIQUE,
    description     TEXT,
    reusable        BIGINT NOT NULL,
    preapproved     BIGINT NOT NULL,
    tags            TEXT NOT NULL,
    expires_at_ms   BIGINT,
    created_at_ms   BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    revoked_at_ms   BIGINT,
    used_count      BIGINT NOT NULL DEFAULT 0,
    last_used_at_ms BIGINT
);
CREATE INDEX enroll_keys_network ON enroll_keys (network_id);

CREATE TABLE devices (
    id                TEXT PRIMARY KEY,
    network_id        TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    owner             TEXT NOT NULL,
    tags              TEXT NOT NULL,
    public_key        TEXT NOT NULL,
    host_num          BIGINT NOT NULL,
    overlay_v4        TEXT NOT NULL,
    overlay_v6        TEXT NOT NULL,
    state             TEXT NOT NULL,
    agentless         BIGINT NOT NULL,
    hostname          TEXT,
    os                TEXT,
    endpoints         TEXT NOT NULL,
    key_expires_at_ms BIGINT,
    created_at_ms     BIGINT NOT NULL,
    last_seen_ms      BIGINT,
    enroll_key_id     TEXT REFERENCES enroll_keys(id) ON DELETE SET NULL,
    credential_hash   TEXT,
    revoked_at_ms     BIGINT
);
CREATE UNIQUE INDEX devices_name_uq ON devices (network_id, lower(name));
CREATE UNIQUE INDEX devices_public_key_uq ON devices (public_key);
CREATE UNIQUE INDEX devices_host_uq ON devices (network_id, host_num);
CREATE UNIQUE INDEX devices_overlay_v4_uq ON devices (network_id, overlay_v4);
CREATE UNIQUE INDEX devices_overlay_v6_uq ON devices (network_id, overlay_v6);
CREATE UNIQUE INDEX devices_credential_uq ON devices (credential_hash);
CREATE INDEX devices_enroll_key ON devices (enroll_key_id);

CREATE TABLE admin_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);
