-- Room history shared by every node (SPEC 10.3): a stream per (hub, room)
-- with its epoch and last offset, and the messages it keeps. Offsets are
-- assigned under the stream row's lock, so they rise with commit order.
CREATE TABLE ws_streams (
    hub_key TEXT NOT NULL,
    stream TEXT NOT NULL,
    epoch TEXT NOT NULL,
    top BIGINT NOT NULL,
    touched_at BIGINT NOT NULL,
    PRIMARY KEY (hub_key, stream)
);

CREATE TABLE ws_history (
    hub_key TEXT NOT NULL,
    stream TEXT NOT NULL,
    pos BIGINT NOT NULL,
    body BYTEA NOT NULL,
    is_binary BOOLEAN NOT NULL,
    published_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (hub_key, stream, pos)
);
CREATE INDEX ws_history_expires ON ws_history (expires_at);
