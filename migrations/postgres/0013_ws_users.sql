-- Users as addresses (SPEC 10.1): each presence row names its user (an
-- end user's sub, or the platform token's id) and the user's info.
ALTER TABLE ws_connections
    ADD COLUMN user_id TEXT,
    ADD COLUMN info TEXT;
CREATE INDEX ws_connections_user ON ws_connections (element_id, user_id);

-- Presence events, exactly once across nodes: a node holds a row while
-- it has at least one connection of the user in the room. A join is told
-- by the node whose row is the first live one, a leave by the node whose
-- deletion leaves none; both under one advisory lock per (hub, room, user).
CREATE TABLE ws_room_users (
    hub_key TEXT NOT NULL,
    room TEXT NOT NULL,
    user_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    info TEXT,
    PRIMARY KEY (hub_key, room, user_id, node_id)
);
CREATE INDEX ws_room_users_node ON ws_room_users (node_id);

-- The live node that took a dead one's room users out (telling their
-- leaves); a node that comes back clears it and writes its rows again.
ALTER TABLE cluster_nodes ADD COLUMN reaped_by TEXT;
