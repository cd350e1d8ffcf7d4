-- The log's top (the global position of its last message) in a row of its own: the append lock.
--
-- Every transaction that appends locks this row before it numbers its messages — the long way
-- with SELECT … FOR UPDATE, the one-statement append by its UPDATE — and holds it until it
-- commits. A row lock that was waited for hands over the row as the holder committed it (READ
-- COMMITTED re-reads the row after the wait), so the next appender numbers on from the committed
-- top even inside a statement whose snapshot is older: that is what lets one statement append.
-- The advisory lock and max(global_position) it replaces needed a fresh snapshot after the lock,
-- hence a statement of its own.
CREATE TABLE {schema}.head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    top      bigint  NOT NULL
);

INSERT INTO {schema}.head (only_row, top)
SELECT true, coalesce(max(global_position), 0) FROM {schema}.log;

-- The planner must know the table has one row, or it over-estimates every statement that joins it.
ANALYZE {schema}.head;

-- Processes of an earlier version take the advisory lock instead of this row: stop them before
-- this migration runs, as the two locks do not exclude each other. Should rows be appended past
-- the head anyway, the store's long way numbers on after the log's own last position.
