-- Several nodes on one database (SPEC §9). Nodes heartbeat in
-- cluster_nodes; presence rows of a node whose heartbeat is stale are
-- ignored and then deleted. Times are the database's clock, in ms.
CREATE TABLE cluster_nodes (
    node_id TEXT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE ws_connections (
    connection_id TEXT PRIMARY KEY,
    element_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    rooms TEXT NOT NULL DEFAULT '[]',
    remote TEXT NOT NULL DEFAULT '',
    connected_at BIGINT NOT NULL
);
CREATE INDEX ws_connections_element ON ws_connections (element_id);
CREATE INDEX ws_connections_node ON ws_connections (node_id);

-- NOTIFY payloads are limited to 8000 bytes: bigger cluster messages are
-- stored here and only their id is notified. Rows are swept after a minute.
CREATE TABLE cluster_payloads (
    id BIGSERIAL PRIMARY KEY,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
