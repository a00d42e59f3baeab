-- Several networks on one console. `exclusive`: a device in this network must not be
-- in any other network at the same time (its agent refuses the other profiles); sent
-- to agents in their maps. `network_id` of an account or API token: NULL means
-- console-wide, else the one network it may see and change. `network_id` of an audit
-- event: the network the action was inside (NULL: console-wide or from before).
ALTER TABLE networks ADD COLUMN exclusive BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN network_id TEXT;
ALTER TABLE admin_tokens ADD COLUMN network_id TEXT;
ALTER TABLE audit_events ADD COLUMN network_id TEXT;
CREATE INDEX audit_events_network ON audit_events (network_id);
