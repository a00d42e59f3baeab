-- Names (DNS). dns_suffix: the network's suffix (its devices answer as NAME.SUFFIX at
-- every agent's resolver); NULL: the default, NETWORK-NAME.zmesh.internal.
-- dns_records: admins' extra names under the suffix, JSON [{"name","ip"}];
-- dns_split: split-DNS entries, JSON [{"domain","resolvers":[ip,...]}]; NULL: none.
ALTER TABLE networks ADD COLUMN dns_suffix TEXT;
ALTER TABLE networks ADD COLUMN dns_records TEXT;
ALTER TABLE networks ADD COLUMN dns_split TEXT;
