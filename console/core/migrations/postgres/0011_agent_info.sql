-- What the agent reports about itself when its stream says Hello: its version (the
-- OS is reported at enrollment, in `os`). NULL: no agent has said Hello yet (or the
-- device is agentless).
ALTER TABLE devices ADD COLUMN agent_version TEXT;
