-- When the console noticed that a device's key had expired (NULL: not expired, or not
-- noticed yet). The expiry sweeper claims each expiry once, even with several replicas,
-- records `device.expired` and bumps the revision so every peer drops the device.
ALTER TABLE devices ADD COLUMN expiry_noted_at_ms INTEGER;
CREATE INDEX devices_key_expiry ON devices (key_expires_at_ms) WHERE key_expires_at_ms IS NOT NULL;
