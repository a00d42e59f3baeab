-- Users who sign in through an OpenID Provider: their identity is (issuer, subject);
-- email, display name and the IdP groups are as last seen at sign-in. Local accounts
-- (break-glass admins) keep issuer and subject NULL. `member` joins the roles: a person
-- who owns devices but may not use the admin console.
ALTER TABLE users ADD COLUMN issuer TEXT;
ALTER TABLE users ADD COLUMN subject TEXT;
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN display_name TEXT;
ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX users_identity_uq ON users (issuer, subject);
