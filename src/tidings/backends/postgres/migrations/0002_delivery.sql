-- Delivery: subscription partitions with checkpoints and leases, the workers holding them,
-- held messages (failed, dead, waiting behind them), outcomes of sent commands, scheduled
-- messages, documents written by handlers, and the audit trail of operator actions.
-- Times are epoch seconds on the database's clock.
CREATE TABLE {schema}.partitions (
    subscription  text             NOT NULL,
    partition     integer          NOT NULL,
    partitions    integer          NOT NULL,
    position      bigint           NOT NULL,
    owner         text,
    lease_expires double precision,
    PRIMARY KEY (subscription, partition)
);

CREATE TABLE {schema}.workers (
    id      text             PRIMARY KEY,
    seen_at double precision NOT NULL
);

CREATE TABLE {schema}.held (
    id              bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription    text             NOT NULL,
    partition       integer          NOT NULL,
    stream          text             NOT NULL,
    global_position bigint           NOT NULL,
    message_id      text             NOT NULL,
    type            text             NOT NULL,
    status          text             NOT NULL
                    CHECK (status IN ('retrying', 'dead', 'waiting', 'replay')),
    attempts        integer          NOT NULL,
    error           text,
    traceback       text,
    history         bytea,
    due_at          double precision,
    first_failed_at double precision,
    last_failed_at  double precision,
    UNIQUE (subscription, global_position)
);

CREATE INDEX held_stream ON {schema}.held (subscription, stream, global_position);
CREATE INDEX held_partition ON {schema}.held (subscription, partition, global_position);

CREATE TABLE {schema}.outcomes (
    message_id text             PRIMARY KEY,
    type       text             NOT NULL,
    status     text             NOT NULL
               CHECK (status IN ('succeeded', 'refused', 'failed', 'dead')),
    result     bytea,
    reason     text,
    code       text,
    error      text,
    attempts   integer          NOT NULL,
    updated_at double precision NOT NULL
);

CREATE TABLE {schema}.scheduled (
    id             text             PRIMARY KEY,
    due_at         double precision NOT NULL,
    stream         text             NOT NULL,
    kind           text             NOT NULL,
    type           text             NOT NULL,
    version        integer          NOT NULL,
    data           bytea            NOT NULL,
    correlation_id text,
    causation_id   text,
    headers        bytea
);

CREATE INDEX scheduled_due ON {schema}.scheduled (due_at, id);

CREATE TABLE {schema}.documents (
    collection text  NOT NULL,
    key        text  NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (collection, key)
);

CREATE TABLE {schema}.audit (
    id     bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     double precision NOT NULL,
    actor  text             NOT NULL,
    action text             NOT NULL,
    target text             NOT NULL,
    detail text             NOT NULL
);
