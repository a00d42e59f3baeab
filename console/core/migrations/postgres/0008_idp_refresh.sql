-- The periodic re-check of SSO users at their OpenID Provider. The refresh token of the
-- user's last sign-in, encrypted by the console (XChaCha20-Poly1305 under a key derived
-- from the OIDC client secret, which is never in the database): `v1:` + base64. When
-- the console last asked the provider about the user, and what it found (`ok`,
-- `groups changed`, `disabled: REASON`, `unreachable: REASON`, `no refresh token`).
ALTER TABLE users ADD COLUMN refresh_token_enc TEXT;
ALTER TABLE users ADD COLUMN idp_checked_at_ms BIGINT;
ALTER TABLE users ADD COLUMN idp_check TEXT;
