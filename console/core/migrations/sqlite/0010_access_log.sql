-- The access log (SQLite; kept column-for-column identical to the PostgreSQL file).
--
-- Each device registers an Ed25519 report key (made on the device) and signs every
-- flow record it reports. Records are kept with their signature in `access_records`,
-- linked into their own hash chain; `access_head` is that chain's single-row head
-- (bumped in the writer's transaction, like `audit_head`), with the last sequence
-- anchored in the audit log (`access.checkpoint` events) and the cut left by retention.
-- `flow_records` (unsigned, unchained) is no longer written; old rows stay readable
-- with SQL only.
-- A device's report key outlives the device: records it signed stay verifiable after
-- the device is deleted.
CREATE TABLE device_report_keys (
    device_id        TEXT PRIMARY KEY,
    report_key       TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL
);

CREATE TABLE access_head (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    seq           INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    anchored_seq  INTEGER NOT NULL,
    pruned_seq    INTEGER NOT NULL,
    pruned_hash   TEXT NOT NULL
);
INSERT INTO access_head (id, seq, hash, anchored_seq, pruned_seq, pruned_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, 0,
        '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE access_records (
    seq            INTEGER PRIMARY KEY,
    reporter       TEXT NOT NULL,
    report_seq     INTEGER NOT NULL,
    src_device     TEXT NOT NULL,
    dst_device     TEXT NOT NULL,
    proto          INTEGER NOT NULL,
    src_port       INTEGER NOT NULL,
    dst_port       INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    packets        INTEGER NOT NULL,
    bytes_back     INTEGER NOT NULL,
    packets_back   INTEGER NOT NULL,
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL,
    rule           TEXT,
    policy_version INTEGER,
    verdict        TEXT NOT NULL,
    sig            TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    UNIQUE (reporter, report_seq)
);
CREATE INDEX access_records_time ON access_records (last_seen_ms);
CREATE INDEX access_records_tuple ON access_records (src_device, dst_device, proto, dst_port, src_port);
CREATE INDEX access_records_dst ON access_records (dst_device);
