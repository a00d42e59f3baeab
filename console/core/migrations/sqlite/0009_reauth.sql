-- Re-authentication: a login started by an enrolled device (with its current
-- credential as proof) names that device; confirming it, by the device's owner,
-- rotates the device's key and renews its key expiry instead of enrolling a new one.
ALTER TABLE device_logins ADD COLUMN reauth_device_id TEXT;
