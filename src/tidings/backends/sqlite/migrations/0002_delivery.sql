-- Delivery: subscription partitions with checkpoints and leases, the workers holding them,
-- held messages (failed, dead, waiting behind them), outcomes of sent commands, scheduled
-- messages, documents written by handlers, and the audit trail of operator actions.
CREATE TABLE tidings_partitions (
    subscription  TEXT    NOT NULL,
    partition     INTEGER NOT NULL,
    partitions    INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    owner         TEXT,
    lease_expires REAL,
    PRIMARY KEY (subscription, partition)
);

CREATE TABLE tidings_workers (
    id      TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);

CREATE TABLE tidings_held (
    id              INTEGER PRIMARY KEY,
    subscription    TEXT    NOT NULL,
    partition       INTEGER NOT NULL,
    stream          TEXT    NOT NULL,
    global_position INTEGER NOT NULL,
    message_id      TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('retrying', 'dead', 'waiting', 'replay')),
    attempts        INTEGER NOT NULL,
    error           TEXT,
    traceback       TEXT,
    history         BLOB,
    due_at          REAL,
    first_failed_at REAL,
    last_failed_at  REAL,
    UNIQUE (subscription, global_position)
);

CREATE INDEX tidings_held_stream ON tidings_held (subscription, stream, global_position);
CREATE INDEX tidings_held_partition ON tidings_held (subscription, partition, global_position);

CREATE TABLE tidings_outcomes (
    message_id TEXT PRIMARY KEY,
    type       TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('succeeded', 'refused', 'failed', 'dead')),
    result     BLOB,
    reason     TEXT,
    code       TEXT,
    error      TEXT,
    attempts   INTEGER NOT NULL,
    updated_at REAL    NOT NULL
);

CREATE TABLE tidings_scheduled (
    id             TEXT PRIMARY KEY,
    due_at         REAL    NOT NULL,
    stream         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    type           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    correlation_id TEXT,
    causation_id   TEXT,
    headers        BLOB
);

CREATE INDEX tidings_scheduled_due ON tidings_scheduled (due_at);

CREATE TABLE tidings_documents (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (collection, key)
);

CREATE TABLE tidings_audit (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
