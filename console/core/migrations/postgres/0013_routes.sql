-- Subnet routes and exit-node offers a device's agent advertises (`ClientMsg::Routes`),
-- one row per canonical prefix (`10.1.0.0/24`, `0.0.0.0/0`, `::/0`). A route carries
-- traffic only once approved (by an admin, or by the policy's `auto_approvers`:
-- approved_by `policy`). The agent's next advertisement replaces the set: prefixes it
-- no longer offers go, with their approval. Deleted with the device.
CREATE TABLE device_routes (
    device_id        TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    prefix           TEXT NOT NULL,
    advertised_at_ms BIGINT NOT NULL,
    approved_at_ms   BIGINT,
    approved_by      TEXT,
    PRIMARY KEY (device_id, prefix)
);
