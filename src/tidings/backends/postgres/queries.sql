-- Every statement of the PostgreSQL store. Each starts with a "-- name:" line; {schema} is the
-- store's schema and {now} the database clock in epoch seconds, both filled in when the store is
-- built. Values are always parameters.

-- name: migrate_lock
SELECT pg_advisory_xact_lock(%s, %s)

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_migrations
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
SELECT version FROM {schema}.migrations

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES (%s, %s)

-- ---------------------------------------------------------------------------------------------
-- Group commit. The append lock (the head row) is held from before the log's top is read until
-- the commit.

-- name: head
SELECT pg_current_xact_id()::text::bigint, {now}, top FROM {schema}.head

-- name: head_locked
-- The log's own last position wins should the head row ever lag it (rows written by a process of
-- a version before migration 0004): the long way then numbers on after it, and moves the head.
SELECT pg_current_xact_id()::text::bigint, {now},
       greatest(top, (SELECT coalesce(max(global_position), 0) FROM {schema}.log))
FROM {schema}.head FOR UPDATE

-- name: move_head
UPDATE {schema}.head SET top = %s

-- name: stream_versions
SELECT s, (SELECT coalesce(max(stream_position), 0) FROM {schema}.log WHERE stream = s)
FROM unnest(%s::text[]) AS s

-- name: known_ids
SELECT id, global_position FROM {schema}.log WHERE id = ANY(%s::text[])

-- name: document_versions
SELECT d.collection, d.key, d.version
FROM {schema}.documents AS d
WHERE (d.collection, d.key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))

-- name: lock_partitions
SELECT subscription, partition, owner, position
FROM {schema}.partitions
WHERE (subscription, partition) IN (SELECT * FROM unnest(%s::text[], %s::integer[]))
ORDER BY subscription, partition
FOR UPDATE

-- name: insert_log
INSERT INTO {schema}.log (global_position, stream, stream_position, id, kind, type, version, data,
                          correlation_id, causation_id, headers, recorded_at)
SELECT g, s, p, i, k, t, v, d, c, ca, h, %s
FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[],
            %s::integer[], %s::bytea[], %s::text[], %s::text[], %s::bytea[])
     AS u(g, s, p, i, k, t, v, d, c, ca, h)

-- name: move_checkpoint
UPDATE {schema}.partitions SET position = %s WHERE subscription = %s AND partition = %s

-- name: upsert_held
INSERT INTO {schema}.held AS h (subscription, partition, stream, global_position, message_id, type,
                                status, attempts, error, traceback, history, due_at,
                                first_failed_at, last_failed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (subscription, global_position) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, error = excluded.error,
    traceback = excluded.traceback, history = excluded.history, due_at = excluded.due_at,
    first_failed_at = coalesce(h.first_failed_at, excluded.first_failed_at),
    last_failed_at = excluded.last_failed_at

-- name: delete_held
DELETE FROM {schema}.held WHERE subscription = %s AND global_position = %s

-- name: upsert_outcomes
-- A group's outcomes as arrays, one element per message id (no id twice: ON CONFLICT DO UPDATE
-- cannot touch a row twice in one statement).
INSERT INTO {schema}.outcomes (message_id, type, status, result, reason, code, error, attempts,
                               updated_at)
SELECT i, t, s, r, re, c, e, a, %s
FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::text[], %s::text[],
            %s::integer[]) AS u(i, t, s, r, re, c, e, a)
ON CONFLICT (message_id) DO UPDATE SET
    type = excluded.type, status = excluded.status, result = excluded.result,
    reason = excluded.reason, code = excluded.code, error = excluded.error,
    attempts = excluded.attempts, updated_at = excluded.updated_at

-- name: put_document
-- A delete writes NULL data: the row keeps the document's version.
INSERT INTO {schema}.documents (collection, key, data, version) VALUES (%s, %s, %s, %s)
ON CONFLICT (collection, key) DO UPDATE SET data = excluded.data, version = excluded.version

-- name: schedule
INSERT INTO {schema}.scheduled (id, due_at, stream, kind, type, version, data, correlation_id,
                                causation_id, headers)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING

-- name: unschedule
DELETE FROM {schema}.scheduled WHERE id = %s

-- name: add_audit
INSERT INTO {schema}.audit (at, actor, action, target, detail) VALUES (%s, %s, %s, %s, %s)

-- name: notify
SELECT pg_notify(%s, %s)

-- name: xact_status
SELECT pg_xact_status(%s::text::xid8)

-- name: end_backend
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND backend_xid::text = %s

-- ---------------------------------------------------------------------------------------------
-- Reading the log.

-- name: read_forwards
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE stream = %s AND stream_position >= %s
ORDER BY stream_position LIMIT %s

-- name: read_backwards
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE stream = %s AND stream_position <= %s
ORDER BY stream_position DESC LIMIT %s

-- name: read_all
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE global_position > %s
ORDER BY global_position LIMIT %s

-- name: read_all_types
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE global_position > %s AND type = ANY(%s::text[])
ORDER BY global_position LIMIT %s

-- name: stream_version
SELECT coalesce(max(stream_position), 0) FROM {schema}.log WHERE stream = %s

-- name: last_position
SELECT coalesce(max(global_position), 0) FROM {schema}.log

-- name: streams
-- The framework's own streams start with '$': listed only when asked for. `stream >= prefix`
-- starts the index scan at the prefix (else it walks every stream before it: 375 ms at 250,000).
-- (No upper bound as SQLite has: in the database's collation a prefix's streams need not sort
-- below the prefix's successor.)
SELECT stream, max(stream_position) FROM {schema}.log
WHERE stream >= %(prefix)s AND starts_with(stream, %(prefix)s)
  AND (%(internal)s OR NOT starts_with(stream, '$'))
GROUP BY stream ORDER BY stream LIMIT %(limit)s

-- name: type_counts
SELECT kind, type, count(*), min(global_position), min(recorded_at) FROM {schema}.log
GROUP BY kind, type ORDER BY 4

-- name: arrivals
-- What arrived through a broker (the header tidings-source), per kind and type: read from the
-- partial index log_arrivals, whose condition this repeats word for word.
SELECT kind, type, count(*), max(global_position), max(recorded_at) FROM {schema}.log
WHERE position('"tidings-source":'::bytea IN headers) > 0
GROUP BY kind, type ORDER BY 4

-- name: backlog
-- Parameters: the bounds, the lowest bound, the types.
SELECT stream, after, count(*), min(recorded_at) FROM (
    SELECT l.stream, l.recorded_at,
           (SELECT max(b) FROM unnest(%s::bigint[]) AS b WHERE b < l.global_position) AS after
    FROM {schema}.log AS l
    WHERE l.global_position > %s AND l.type = ANY(%s::text[])
) AS spans GROUP BY stream, after

-- ---------------------------------------------------------------------------------------------
-- Subscriptions, partitions and workers.

-- name: now
SELECT {now}

-- name: subscription_size
SELECT partitions FROM {schema}.partitions WHERE subscription = %s LIMIT 1

-- name: create_partitions
INSERT INTO {schema}.partitions (subscription, partition, partitions, position)
SELECT %s, n, %s, %s FROM generate_series(0, %s - 1) AS n
ON CONFLICT DO NOTHING

-- name: heartbeat
INSERT INTO {schema}.workers (id, seen_at) VALUES (%s, {now})
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at

-- name: forget_workers
DELETE FROM {schema}.workers WHERE seen_at < {now} - %s

-- name: count_workers
SELECT count(*) FROM {schema}.workers WHERE seen_at >= {now} - %s

-- name: lock_subscription
SELECT partition, owner, owner IS NULL OR lease_expires < {now}
FROM {schema}.partitions WHERE subscription = %s
ORDER BY partition
FOR UPDATE

-- name: free_partitions
UPDATE {schema}.partitions SET owner = NULL, lease_expires = NULL
WHERE subscription = %s AND partition = ANY(%s::integer[])

-- name: lease_partitions
UPDATE {schema}.partitions SET owner = %s, lease_expires = {now} + %s
WHERE subscription = %s AND partition = ANY(%s::integer[])
RETURNING partition, position

-- name: release_leases
UPDATE {schema}.partitions SET owner = NULL, lease_expires = NULL WHERE owner = %s

-- name: forget_worker
DELETE FROM {schema}.workers WHERE id = %s

-- name: partitions
SELECT subscription, partition, partitions, position, owner, lease_expires
FROM {schema}.partitions WHERE %s::text IS NULL OR subscription = %s
ORDER BY subscription, partition

-- name: lock_for_operator
SELECT owner, owner IS NOT NULL AND lease_expires > {now}
FROM {schema}.partitions WHERE subscription = %s
FOR UPDATE

-- name: reset_partitions
UPDATE {schema}.partitions SET position = %s WHERE subscription = %s

-- name: drop_held_above
DELETE FROM {schema}.held WHERE subscription = %s AND global_position > %s

-- name: delete_partitions
DELETE FROM {schema}.partitions WHERE subscription = %s

-- name: operator_audit
INSERT INTO {schema}.audit (at, actor, action, target, detail)
VALUES ({now}, %s, %s, %s, %s)

-- ---------------------------------------------------------------------------------------------
-- Held messages.

-- name: held
SELECT subscription, partition, stream, global_position, message_id, type, status, attempts,
       error, traceback, history, due_at, first_failed_at, last_failed_at, id
FROM {schema}.held
WHERE (%s::text IS NULL OR subscription = %s) AND (%s::text IS NULL OR stream = %s)
  AND (%s::text IS NULL OR status = %s) AND (%s::bigint IS NULL OR id = %s)
ORDER BY subscription, global_position LIMIT %s

-- name: held_streams
SELECT DISTINCT stream FROM {schema}.held
WHERE subscription = %s AND partition = ANY(%s::integer[])

-- name: due_streams_sequenced
-- Only due rows can start a replay (a waiting row is marked 'replay' by whoever removes the row
-- ahead of it), so the due index finds the few candidates before the first-in-stream check.
SELECT h.stream, min(h.global_position) FROM {schema}.held h
WHERE h.subscription = %s
  AND (h.status = 'replay' OR (h.status = 'retrying' AND h.due_at <= {now}))
  AND h.partition = ANY(%s::integer[])
  AND h.global_position = (SELECT min(global_position) FROM {schema}.held
                           WHERE subscription = h.subscription AND stream = h.stream)
GROUP BY h.stream ORDER BY 2

-- name: due_streams
SELECT h.stream, min(h.global_position) FROM {schema}.held h
WHERE h.subscription = %s
  AND (h.status = 'replay' OR (h.status = 'retrying' AND h.due_at <= {now}))
  AND h.partition = ANY(%s::integer[])
GROUP BY h.stream ORDER BY 2

-- name: held_counts
SELECT subscription, status, count(*) FROM {schema}.held
GROUP BY subscription, status ORDER BY subscription, status

-- ---------------------------------------------------------------------------------------------
-- Outcomes, the schedule, documents, the audit trail.

-- name: outcome
SELECT message_id, type, status, result, reason, code, error, attempts, updated_at
FROM {schema}.outcomes WHERE message_id = %s

-- name: due_scheduled
SELECT id, stream, kind, type, version, data, correlation_id, causation_id, headers
FROM {schema}.scheduled WHERE due_at <= {now} ORDER BY due_at, id LIMIT %s

-- name: next_due
SELECT min(due_at) - {now} FROM {schema}.scheduled

-- name: get_document
SELECT data, version FROM {schema}.documents WHERE collection = %s AND key = %s

-- name: documents
SELECT key, data FROM {schema}.documents WHERE collection = %s AND data IS NOT NULL
ORDER BY key LIMIT %s

-- name: audit_entries
SELECT actor, action, target, detail, at, id FROM {schema}.audit ORDER BY id DESC LIMIT %s

-- ---------------------------------------------------------------------------------------------
-- The one-statement commit of a group that only appends (_write.py). %(rows)s is a JSON array, as
-- UTF-8 bytes, of [stream, id, kind, type, version, data, correlation id, causation id, headers,
-- base, k]: data and headers are the stored JSON itself; base is the version the stream is
-- expected at before the group (-1: whatever it is) and k the row's place among the group's rows
-- for that stream. A stream not at its expected version gives a NULL position, which the log
-- refuses, and one that moves past it meanwhile collides with a stored position: either way
-- nothing is written.

-- name: append
-- Each stream's version is read once, before any row goes in (MATERIALIZED: per row, each read
-- would walk the index entries of the rows this statement has just inserted), by the stream's
-- last position in the index, unless it is expected to be new (a correlated EXISTS on the
-- position instead is planned as a hashed subplan: a scan of the whole log).
WITH rows AS (
    SELECT u.n, u.r->>0 AS stream, (u.r->>9)::bigint AS base, (u.r->>10)::bigint AS k, u.r
    FROM json_array_elements(convert_from(%(rows)s::bytea, 'UTF8')::json)
         WITH ORDINALITY AS u(r, n)
), starts AS MATERIALIZED (
    SELECT s.stream, CASE WHEN s.base < 0 OR s.base = v.current THEN v.current END AS version
    FROM (SELECT DISTINCT stream, base FROM rows) AS s,
         LATERAL (SELECT coalesce(max(l.stream_position), 0) AS current FROM {schema}.log l
                  WHERE s.base <> 0 AND l.stream = s.stream) AS v
), head AS (
    UPDATE {schema}.head SET top = top + %(count)s::bigint
    RETURNING top - %(count)s::bigint AS base, {now} AS now
), written AS (
    INSERT INTO {schema}.log (global_position, stream, stream_position, id, kind, type, version,
                              data, correlation_id, causation_id, headers, recorded_at)
    SELECT head.base + rows.n, rows.stream, starts.version + rows.k,
           r->>1, r->>2, r->>3, (r->>4)::integer, convert_to((r->5)::text, 'UTF8'), r->>6, r->>7,
           CASE WHEN json_typeof(r->8) = 'null' THEN NULL ELSE convert_to((r->8)::text, 'UTF8') END,
           head.now
    FROM head, rows JOIN starts USING (stream)
    RETURNING global_position, stream_position
)
SELECT min(global_position) - 1, array_agg(stream_position ORDER BY global_position),
       pg_notify(%(channel)s::text, max(global_position)::text)
FROM written

-- name: append_one
-- A group of one message (a sequential caller's every commit): ``append`` with the message as plain
-- parameters, sparing the server the JSON array on the commit a sequential caller waits for.
-- base as in ``append``: -1 for any version, else the version the stream must be at. Returns the
-- message's global and stream positions.
WITH head AS (
    UPDATE {schema}.head SET top = top + 1 RETURNING top, {now} AS now
), written AS (
    INSERT INTO {schema}.log (global_position, stream, stream_position, id, kind, type, version,
                              data, correlation_id, causation_id, headers, recorded_at)
    SELECT head.top, %(stream)s::text,
           CASE
               WHEN %(base)s::bigint < 0 THEN (
                   SELECT coalesce(max(l.stream_position), 0) FROM {schema}.log l
                   WHERE l.stream = %(stream)s::text)
               WHEN %(base)s::bigint = 0 OR EXISTS (
                   SELECT FROM {schema}.log l
                   WHERE l.stream = %(stream)s::text AND l.stream_position = %(base)s::bigint)
               THEN %(base)s::bigint
           END + 1,
           %(id)s::text, %(kind)s::text, %(type)s::text, %(version)s::integer, %(data)s::bytea,
           %(correlation_id)s::text, %(causation_id)s::text, %(headers)s::bytea, head.now
    FROM head
    RETURNING stream_position
)
SELECT head.top, written.stream_position, pg_notify(%(channel)s::text, head.top::text)
FROM head, written

-- ---------------------------------------------------------------------------------------------
-- The console: messages by id, correlation and causation; outcomes by status.

-- name: find_ids
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE id = ANY(%s::text[])
ORDER BY global_position LIMIT %s

-- name: find_correlated
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE correlation_id = %s
ORDER BY global_position LIMIT %s

-- name: find_caused
SELECT id, kind, type, version, stream, stream_position, global_position, recorded_at, data,
       correlation_id, causation_id, headers
FROM {schema}.log WHERE causation_id = %s
ORDER BY global_position LIMIT %s

-- name: outcomes
SELECT message_id, type, status, result, reason, code, error, attempts, updated_at
FROM {schema}.outcomes ORDER BY updated_at DESC LIMIT %s

-- name: outcomes_by_status
SELECT message_id, type, status, result, reason, code, error, attempts, updated_at
FROM {schema}.outcomes WHERE status = %s ORDER BY updated_at DESC LIMIT %s

-- name: outcome_counts
SELECT status, count(*) FROM {schema}.outcomes GROUP BY status ORDER BY status

-- name: held_summaries
-- The console's listing and grouping, from the index held_summary alone.
SELECT subscription, partition, stream, global_position, message_id, type, status, attempts,
       error, NULL, NULL, due_at, first_failed_at, last_failed_at, id
FROM {schema}.held
WHERE status = %(status)s AND (%(subscription)s::text IS NULL OR subscription = %(subscription)s)
ORDER BY subscription, global_position LIMIT %(limit)s

-- name: held_summaries_any
SELECT subscription, partition, stream, global_position, message_id, type, status, attempts,
       error, NULL, NULL, due_at, first_failed_at, last_failed_at, id
FROM {schema}.held
WHERE %(subscription)s::text IS NULL OR subscription = %(subscription)s
ORDER BY subscription, global_position LIMIT %(limit)s

-- name: held_tails
SELECT id, right(traceback, length(coalesce(error, '')) + 600)
FROM {schema}.held WHERE id = ANY(%s::bigint[])
