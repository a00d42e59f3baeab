-- Audit chain, signed checkpoints, SIEM forwarding cursor and flow records (SQLite).
-- Kept column-for-column identical to the PostgreSQL file.

-- The single-row head of the hash chain. Every event append bumps `seq` and sets `hash`
-- in the writer's transaction, so appends are totally ordered and gapless: SQLite
-- serialises writers (BEGIN IMMEDIATE), PostgreSQL row-locks this row until commit.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    source_addr TEXT,
    before_json TEXT,
    after_json  TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_target ON audit_events (target);

-- kind: 'periodic', 'shutdown', 'manual' or 'anchor' (left at the cut by pruning).
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    time_ms   INTEGER NOT NULL,
    signature TEXT NOT NULL,
    kind      TEXT NOT NULL
);

-- How far each SIEM forwarder got (at-least-once delivery).
CREATE TABLE audit_forward (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);

CREATE TABLE flow_records (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter       TEXT NOT NULL,
    src_device     TEXT NOT NULL,
    dst_device     TEXT NOT NULL,
    proto          INTEGER NOT NULL,
    src_port       INTEGER NOT NULL,
    dst_port       INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    packets        INTEGER NOT NULL,
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL,
    rule           TEXT,
    verdict        TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE INDEX flow_records_time ON flow_records (last_seen_ms);
CREATE INDEX flow_records_tuple ON flow_records (src_device, dst_device, proto, dst_port);
