-- Audit chain, signed checkpoints, SIEM forwarding cursor and flow records (PostgreSQL).
-- Kept column-for-column identical to the SQLite file.

-- The single-row head of the hash chain. Every event append bumps `seq` and sets `hash`
-- in the writer's transaction, so appends are totally ordered and gapless: SQLite
-- serialises writers (BEGIN IMMEDIATE), PostgreSQL row-locks this row until commit.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
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
    seq       BIGINT PRIMARY KEY,
    hash      TEXT NOT NULL,
    time_ms   BIGINT NOT NULL,
    signature TEXT NOT NULL,
    kind      TEXT NOT NULL
);

-- How far each SIEM forwarder got (at-least-once delivery).
CREATE TABLE audit_forward (
    name TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);

CREATE TABLE flow_records (
    id             BIGSERIAL PRIMARY KEY,
    reporter       TEXT NOT NULL,
    src_device     TEXT NOT NULL,
    dst_device     TEXT NOT NULL,
    proto          BIGINT NOT NULL,
    src_port       BIGINT NOT NULL,
    dst_port       BIGINT NOT NULL,
    bytes          BIGINT NOT NULL,
    packets        BIGINT NOT NULL,
    first_seen_ms  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    rule           TEXT,
    verdict        TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);
CREATE INDEX flow_records_time ON flow_records (last_seen_ms);
CREATE INDEX flow_records_tuple ON flow_records (src_device, dst_device, proto, dst_port);
