-- Console accounts (sqlite flavour; column-for-column identical to the other file).
-- Passwords are Argon2id PHC strings; session ids, setup tokens and API tokens are
-- stored only as SHA-256 hashes.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL,
    role           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    created_by     TEXT NOT NULL,
    disabled_at_ms INTEGER,
    last_sign_in_ms INTEGER
);
CREATE UNIQUE INDEX users_username_uq ON users (lower(username));

CREATE TABLE web_sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    source_addr   TEXT
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- one-time links that create the first admin
CREATE TABLE setup_tokens (
    token_hash    TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
);

-- failed sign-ins, for rate limiting per client address and per account
CREATE TABLE sign_in_failures (
    scope   TEXT NOT NULL,
    subject TEXT NOT NULL,
    time_ms INTEGER NOT NULL
);
CREATE INDEX sign_in_failures_subject ON sign_in_failures (scope, subject, time_ms);

-- personal API tokens: owned by a user, carrying that user's role
ALTER TABLE admin_tokens ADD COLUMN user_id TEXT;
CREATE INDEX admin_tokens_user ON admin_tokens (user_id);
