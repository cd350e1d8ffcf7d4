-- The log: every message, commands and events alike, in one global order.
-- Stream positions start at 1 and have no gaps; a message id is stored once. Global positions are
-- assigned max + 1 by the transaction holding the append lock, which it keeps until it commits:
-- they have no gaps either, and a later position is never visible before an earlier one.
CREATE TABLE {schema}.log (
    global_position bigint           PRIMARY KEY,
    stream          text             NOT NULL,
    stream_position bigint           NOT NULL,
    id              text             NOT NULL,
    kind            text             NOT NULL CHECK (kind IN ('command', 'event')),
    type            text             NOT NULL,
    version         integer          NOT NULL,
    data            bytea            NOT NULL,
    correlation_id  text,
    causation_id    text,
    headers         bytea,
    recorded_at     double precision NOT NULL,
    CONSTRAINT log_stream_position UNIQUE (stream, stream_position),
    CONSTRAINT log_id UNIQUE (id)
);

-- A subscription reads only its types from its checkpoint on: without this index a rare type
-- would be looked for in every later message on every poll.
CREATE INDEX log_type ON {schema}.log (type, global_position);
