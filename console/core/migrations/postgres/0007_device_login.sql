-- Enrollment by login: an agent without an enrollment key asks for a login; the user
-- opens /ui/login/CODE in a browser, signs in and confirms; the agent, polling with its
-- poll secret (stored only as a SHA-256 hash), then collects its device credential once.
CREATE TABLE device_logins (
    code            TEXT PRIMARY KEY,
    poll_hash       TEXT NOT NULL UNIQUE,
    network_id      TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    name            TEXT,
    hostname        TEXT,
    os              TEXT,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    user_id         TEXT,
    device_id       TEXT,
    collected_at_ms BIGINT
);
CREATE INDEX device_logins_expiry ON device_logins (expires_at_ms);
