-- The log: every message, commands and events alike, in one global order.
-- Stream positions start at 1 and have no gaps; a message id is stored once.
CREATE TABLE tidings_log (
    global_position INTEGER PRIMARY KEY,
    stream          TEXT    NOT NULL,
    stream_position INTEGER NOT NULL,
    id              TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('command', 'event')),
    type            TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    data            BLOB    NOT NULL,
    correlation_id  TEXT,
    causation_id    TEXT,
    headers         BLOB,
    recorded_at     REAL    NOT NULL
);

CREATE UNIQUE INDEX tidings_log_stream ON tidings_log (stream, stream_position);
CREATE UNIQUE INDEX tidings_log_id ON tidings_log (id);
