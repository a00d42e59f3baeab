-- The access log (PostgreSQL; kept column-for-column identical to the SQLite file).
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
    registered_at_ms BIGINT  NOT NULL
);

CREATE TABLE access_head (
    id            BIGINT  PRIMARY KEY CHECK (id = 1),
    seq           BIGINT  NOT NULL,
    hash          TEXT NOT NULL,
    anchored_seq  BIGINT  NOT NULL,
    pruned_seq    BIGINT  NOT NULL,
    pruned_hash   TEXT NOT NULL
);
INSERT INTO access_head (id, seq, hash, anchored_seq, pruned_seq, pruned_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, 0,
        '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE access_records (
    seq            BIGINT  PRIMARY KEY,
    reporter       TEXT NOT NULL,
    report_seq     BIGINT  NOT NULL,
    src_device     TEXT NOT NULL,
    dst_device     TEXT NOT NULL,
    proto          BIGINT  NOT NULL,
    src_port       BIGINT  NOT NULL,
    dst_port       BIGINT  NOT NULL,
    bytes          BIGINT  NOT NULL,
    packets        BIGINT  NOT NULL,
    bytes_back     BIGINT  NOT NULL,
    packets_back   BIGINT  NOT NULL,
    first_seen_ms  BIGINT  NOT NULL,
    last_seen_ms   BIGINT  NOT NULL,
    rule           TEXT,
    policy_version BIGINT,
    verdict        TEXT NOT NULL,
    sig            TEXT NOT NULL,
    received_at_ms BIGINT  NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    UNIQUE (reporter, report_seq)
);
CREATE INDEX access_records_time ON access_records (last_seen_ms);
CREATE INDEX access_records_tuple ON access_records (src_device, dst_device, proto, dst_port, src_port);
CREATE INDEX access_records_dst ON access_records (dst_device);
