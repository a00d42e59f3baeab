-- Change acknowledgements. An agent acknowledges each map version once its data plane
-- enforces it (`ClientMsg::Applied`); the device keeps the newest one. A rollout is one
-- network revision a console replica published, with the devices whose map it changed
-- (its targets): whether each was connected at the time, and when it applied the
-- change. `finished_at_ms` is set when every connected target applied it or the wait
-- ran out (then, for admin changes, the `change.applied` audit event has the figures).
ALTER TABLE devices ADD COLUMN applied_version INTEGER;
ALTER TABLE devices ADD COLUMN applied_at_ms INTEGER;

CREATE TABLE rollouts (
    network_id     TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    revision       INTEGER NOT NULL,
    made_at_ms     INTEGER NOT NULL,
    audited        INTEGER NOT NULL,
    finished_at_ms INTEGER,
    PRIMARY KEY (network_id, revision)
);

CREATE TABLE rollout_targets (
    network_id    TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    device_id     TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    connected     INTEGER NOT NULL,
    applied_at_ms INTEGER,
    PRIMARY KEY (network_id, revision, device_id),
    FOREIGN KEY (network_id, revision) REFERENCES rollouts(network_id, revision) ON DELETE CASCADE
);
-- what an acknowledgement updates: the device's targets not yet applied
CREATE INDEX rollout_targets_pending ON rollout_targets (device_id, revision) WHERE applied_at_ms IS NULL;
