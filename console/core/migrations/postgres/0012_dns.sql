-- The network's DNS suffix (its devices answer as NAME.SUFFIX at every agent's
-- resolver). NULL: the default, NETWORK-NAME.zmesh.internal.
ALTER TABLE networks ADD COLUMN dns_suffix TEXT;
