-- Every statement of the SQLite store. Each starts with a "-- name:" line; {now} is SQLite's
-- clock in epoch seconds, filled in when the statements are read. Values are always parameters;
-- a list of values is one parameter, a JSON array read with json_each.

-- name: connect
-- The connection never waits inside SQLite for another process's lock: the store waits with
-- asyncio sleeps instead. {synchronous} is one of FULL, NORMAL, EXTRA.
PRAGMA busy_timeout = 0;
PRAGMA synchronous = {synchronous};
PRAGMA journal_mode = WAL;

-- name: begin
BEGIN IMMEDIATE

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: create_migrations
CREATE TABLE IF NOT EXISTS tidings_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)

-- name: applied_migrations
SELECT version FROM tidings_migrations

-- name: record_migration
INSERT INTO tidings_migrations (version, name, applied_at) VALUES (?, ?, {now})

-- ---------------------------------------------------------------------------------------------
-- Group commit: what the plan's checks need (read under the write lock), then the plan's rows.

-- name: savepoint
-- Around a group's log rows, so that a failure among them undoes them all (see _commit.py).
SAVEPOINT log_rows

-- name: rollback_to
ROLLBACK TO log_rows

-- name: release
RELEASE log_rows

-- name: known_id
SELECT global_position FROM tidings_log WHERE id = ?

-- name: document_versions
-- ? is a JSON array of [collection, key] pairs.
SELECT d.collection, d.key, d.version
FROM json_each(?) AS j
JOIN tidings_documents AS d
  ON d.collection = json_extract(j.value, '$[0]') AND d.key = json_extract(j.value, '$[1]')

-- name: moved_partitions
-- ? is a JSON array of [subscription, partition] pairs.
SELECT p.subscription, p.partition, p.owner, p.position
FROM json_each(?) AS j
JOIN tidings_partitions AS p
  ON p.subscription = json_extract(j.value, '$[0]') AND p.partition = json_extract(j.value, '$[1]')

-- name: insert_log
INSERT INTO tidings_log (global_position, stream, stream_position, id, kind, type, version, data,
                         correlation_id, causation_id, headers, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: move_checkpoint
UPDATE tidings_partitions SET position = ? WHERE subscription = ? AND partition = ?

-- name: upsert_outcome
INSERT OR REPLACE INTO tidings_outcomes (message_id, type, status, result, reason, code, error,
                                         attempts, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: upsert_held
INSERT INTO tidings_held (subscription, partition, stream, global_position, message_id, type,
                          status, attempts, error, traceback, history, due_at, first_failed_at,
                          last_failed_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (subscription, global_position) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, error = excluded.error,
    traceback = excluded.traceback, history = excluded.history, due_at = excluded.due_at,
    first_failed_at = coalesce(tidings_held.first_failed_at, excluded.first_failed_at),
    last_failed_at = excluded.last_failed_at

-- name: delete_held
DELETE FROM tidings_held WHERE subscription = ? AND global_position = ?

-- name: put_document
-- A delete writes NULL data: the row keeps the document's version.
INSERT INTO tidings_documents (collection, key, data, version) VALUES (?, ?, ?, ?)
ON CONFLICT (collection, key) DO UPDATE SET data = excluded.data, version = excluded.version

-- name: schedule
INSERT OR IGNORE INTO tidings_scheduled (id, due_at, stream, kind, type, version, data,
                                         correlation_id, causation_id, headers)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: unschedule
DELETE FROM tidings_scheduled WHERE id = ?

-- name: add_audit
INSERT INTO tidings_audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)

-- ---------------------------------------------------------------------------------------------
-- Reading the log. Payloads are read as BLOB whatever was stored, so that a row damaged by hand
-- fails as a decode error naming the row, not inside the driver.

-- name: read_forwards
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE stream = ? AND stream_position >= ?
ORDER BY stream_position LIMIT coalesce(?, -1)

-- name: read_backwards
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE stream = ? AND stream_position <= ?
ORDER BY stream_position DESC LIMIT coalesce(?, -1)

-- name: read_all
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE global_position > ?
ORDER BY global_position LIMIT ?

-- name: read_all_types
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE global_position > ? AND type IN (SELECT value FROM json_each(?))
ORDER BY global_position LIMIT ?

-- name: stream_version
SELECT coalesce(max(stream_position), 0) FROM tidings_log WHERE stream = ?

-- name: last_position
SELECT coalesce(max(global_position), 0) FROM tidings_log

-- name: streams
-- The framework's own streams start with '$': listed only when asked for. The prefix's streams
-- lie in the index from the prefix to :after (text is compared byte by byte), so a prefix that
-- matches few streams does not walk the rest of the index.
SELECT stream, max(stream_position) FROM tidings_log
WHERE stream >= :prefix AND stream < :after AND substr(stream, 1, length(:prefix)) = :prefix
  AND (:internal OR substr(stream, 1, 1) <> '$')
GROUP BY stream ORDER BY stream LIMIT :limit

-- name: type_counts
SELECT kind, type, count(*), min(global_position), min(recorded_at) FROM tidings_log
GROUP BY kind, type ORDER BY 4

-- name: arrivals
-- What arrived through a broker (the header tidings-source), per kind and type: read from the
-- partial index tidings_log_arrivals, whose condition this repeats word for word.
SELECT kind, type, count(*), max(global_position), max(recorded_at) FROM tidings_log
WHERE instr(headers, CAST('"tidings-source":' AS BLOB)) > 0
GROUP BY kind, type ORDER BY 4

-- name: backlog
-- Parameters: the bounds (a JSON array), the lowest bound, the types (a JSON array).
-- NOT INDEXED: the span is read by primary key; left to itself SQLite scans the whole log by
-- the stream index to group (0.3 ms instead of 240 ms with a million messages).
SELECT stream, after, count(*), min(recorded_at) FROM (
    SELECT l.stream, l.recorded_at,
           (SELECT max(value) FROM json_each(?) WHERE value < l.global_position) AS after
    FROM tidings_log AS l NOT INDEXED
    WHERE l.global_position > ? AND l.type IN (SELECT value FROM json_each(?))
) GROUP BY stream, after

-- ---------------------------------------------------------------------------------------------
-- Subscriptions: partitions, leases and workers.

-- name: now
SELECT {now}

-- name: subscription_size
SELECT partitions FROM tidings_partitions WHERE subscription = ? LIMIT 1

-- name: create_partition
INSERT INTO tidings_partitions (subscription, partition, partitions, position) VALUES (?, ?, ?, ?)

-- name: heartbeat
INSERT OR REPLACE INTO tidings_workers (id, seen_at) VALUES (?, {now})

-- name: forget_workers
DELETE FROM tidings_workers WHERE seen_at < {now} - ?

-- name: count_workers
SELECT count(*) FROM tidings_workers WHERE seen_at >= {now} - ?

-- name: owned_partitions
SELECT partition FROM tidings_partitions WHERE subscription = ? AND owner = ? ORDER BY partition

-- name: free_partitions
SELECT partition FROM tidings_partitions
WHERE subscription = ? AND (owner IS NULL OR lease_expires < {now})
ORDER BY partition LIMIT ?

-- name: release_partition
UPDATE tidings_partitions SET owner = NULL, lease_expires = NULL
WHERE subscription = ? AND partition = ?

-- name: lease_partition
UPDATE tidings_partitions SET owner = ?, lease_expires = {now} + ?
WHERE subscription = ? AND partition = ?

-- name: partition_position
SELECT position FROM tidings_partitions WHERE subscription = ? AND partition = ?

-- name: release_leases
UPDATE tidings_partitions SET owner = NULL, lease_expires = NULL WHERE owner = ?

-- name: forget_worker
DELETE FROM tidings_workers WHERE id = ?

-- name: partitions
SELECT subscription, partition, partitions, position, owner, lease_expires
FROM tidings_partitions WHERE ? IS NULL OR subscription = ?
ORDER BY subscription, partition

-- name: live_owners
SELECT DISTINCT owner FROM tidings_partitions
WHERE subscription = ? AND owner IS NOT NULL AND lease_expires > {now}

-- name: reset_partitions
UPDATE tidings_partitions SET position = ? WHERE subscription = ?

-- name: drop_held_above
DELETE FROM tidings_held WHERE subscription = ? AND global_position > ?

-- name: delete_partitions
DELETE FROM tidings_partitions WHERE subscription = ?

-- ---------------------------------------------------------------------------------------------
-- Held messages.

-- name: held
SELECT subscription, partition, stream, global_position, message_id, type, status, attempts,
       error, traceback, history, due_at, first_failed_at, last_failed_at, id
FROM tidings_held
WHERE (? IS NULL OR subscription = ?) AND (? IS NULL OR stream = ?)
  AND (? IS NULL OR status = ?) AND (? IS NULL OR id = ?)
ORDER BY subscription, global_position LIMIT ?

-- name: held_streams
SELECT DISTINCT stream FROM tidings_held
WHERE subscription = ? AND partition IN (SELECT value FROM json_each(?))

-- name: due_streams
-- Only rows that are due can start a replay (a waiting row never does by itself: whoever removes
-- the row ahead of it marks it for replay), so the due index finds the few candidates.
SELECT h.stream, min(h.global_position) FROM tidings_held AS h
WHERE h.subscription = ?
  AND (h.status = 'replay' OR (h.status = 'retrying' AND h.due_at <= {now}))
  AND h.partition IN (SELECT value FROM json_each(?))
GROUP BY h.stream ORDER BY 2

-- name: due_streams_sequenced
-- As due_streams, counting only a stream's first held row.
SELECT h.stream, min(h.global_position) FROM tidings_held AS h
WHERE h.subscription = ?
  AND (h.status = 'replay' OR (h.status = 'retrying' AND h.due_at <= {now}))
  AND h.partition IN (SELECT value FROM json_each(?))
  AND h.global_position = (SELECT min(global_position) FROM tidings_held
                           WHERE subscription = h.subscription AND stream = h.stream)
GROUP BY h.stream ORDER BY 2

-- name: held_counts
SELECT subscription, status, count(*) FROM tidings_held
GROUP BY subscription, status ORDER BY subscription, status

-- ---------------------------------------------------------------------------------------------
-- Outcomes, the schedule, documents and the audit trail.

-- name: outcome
SELECT message_id, type, status, result, reason, code, error, attempts, updated_at
FROM tidings_outcomes WHERE message_id = ?

-- name: due_scheduled
SELECT id, stream, kind, type, version, data, correlation_id, causation_id, headers
FROM tidings_scheduled WHERE due_at <= {now} ORDER BY due_at, id LIMIT ?

-- name: next_due
SELECT min(due_at) - {now} FROM tidings_scheduled

-- name: get_document
SELECT data, version FROM tidings_documents WHERE collection = ? AND key = ?

-- name: documents
SELECT key, data FROM tidings_documents WHERE collection = ? AND data IS NOT NULL
ORDER BY key LIMIT ?

-- name: audit_entries
SELECT actor, action, target, detail, at, id FROM tidings_audit ORDER BY id DESC LIMIT ?

-- ---------------------------------------------------------------------------------------------
-- The console: messages by id, correlation and causation; outcomes by status.

-- name: find_ids
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE id IN (SELECT value FROM json_each(?))
ORDER BY global_position LIMIT ?

-- name: find_correlated
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE correlation_id = ?
ORDER BY global_position LIMIT ?

-- name: find_caused
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at,
       CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)
FROM tidings_log WHERE causation_id = ?
ORDER BY global_position LIMIT ?

-- name: outcomes
SELECT message_id, type, status, result, reason, code, error, attempts, updated_at
FROM tidings_outcomes ORDER BY updated_at DESC LIMIT ?

-- name: outcomes_by_status
SELECT message_id, type, status, result, reason, code, error, attempts, updated_at
FROM tidings_outcomes WHERE status = ? ORDER BY updated_at DESC LIMIT ?

-- name: outcome_counts
SELECT status, count(*) FROM tidings_outcomes GROUP BY status ORDER BY status

-- name: held_summaries
-- The console's listing and grouping, from the index tidings_held_summary alone.
SELECT subscription, partition, stream, global_position, message_id, type, status, attempts,
       error, NULL, NULL, due_at, first_failed_at, last_failed_at, id
FROM tidings_held INDEXED BY tidings_held_summary
WHERE status = :status AND (:subscription IS NULL OR subscription = :subscription)
ORDER BY subscription, global_position LIMIT :limit

-- name: held_summaries_any
SELECT subscription, partition, stream, global_position, message_id, type, status, attempts,
       error, NULL, NULL, due_at, first_failed_at, last_failed_at, id
FROM tidings_held
WHERE :subscription IS NULL OR subscription = :subscription
ORDER BY subscription, global_position LIMIT :limit

-- name: held_tails
SELECT id, substr(traceback, -(length(coalesce(error, '')) + 600))
FROM tidings_held WHERE id IN (SELECT value FROM json_each(?))
