-- One round trip for the common commit: a group of transactions that only append.
--
-- Takes the append lock, reads the log's top and the versions of the streams appended to, checks
-- every append's expected version in order (-2 is "any"), numbers the rows exactly as the store's
-- planner does (global positions top + 1 onwards; each stream's positions on from its version),
-- inserts them, notifies, and returns the top it started from followed by the streams' versions
-- before the group. Any check that fails raises (SQLSTATE TD001) and nothing is written; the store
-- then commits the group the long way, which refuses only the culprit. A message id stored
-- already breaks the log's unique constraint the same way.
CREATE FUNCTION {schema}.append_group(
    lock_class integer, lock_key integer, channel text, streams text[], ops json, rows json
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
-- ops: [[stream, expected version, number of messages], ...] in commit order;
-- rows: [[stream, id, kind, type, version, data, correlation id, causation id, headers], ...]
-- where data and headers are the stored JSON itself (headers may be null).
DECLARE
    top bigint;
    before bigint[];
    current bigint[];
    positions bigint[];
    op json;
    at integer;
    expected bigint;
    n_rows integer := 0;
    recorded double precision;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, lock_key);
    recorded := {now};
    SELECT coalesce(max(global_position), 0) INTO top FROM {schema}.log;
    SELECT array_agg(
               (SELECT coalesce(max(l.stream_position), 0) FROM {schema}.log l WHERE l.stream = s)
               ORDER BY n)
      INTO before
      FROM unnest(streams) WITH ORDINALITY AS u(s, n);
    current := before;
    positions := array_fill(0::bigint, ARRAY[json_array_length(rows)]);
    FOR op IN SELECT * FROM json_array_elements(ops) LOOP
        at := array_position(streams, op->>0);
        expected := (op->>1)::bigint;
        IF expected <> -2 AND expected <> current[at] THEN
            RAISE EXCEPTION USING ERRCODE = 'TD001',
                MESSAGE = 'tidings: expected version of ' || (op->>0) || ' is ' || expected
                          || ', found ' || current[at];
        END IF;
        FOR k IN 1 .. (op->>2)::integer LOOP
            n_rows := n_rows + 1;
            current[at] := current[at] + 1;
            positions[n_rows] := current[at];
        END LOOP;
    END LOOP;
    INSERT INTO {schema}.log (global_position, stream, stream_position, id, kind, type, version,
                              data, correlation_id, causation_id, headers, recorded_at)
    SELECT top + u.n, r->>0, positions[u.n], r->>1, r->>2, r->>3, (r->>4)::integer,
           convert_to((r->5)::text, 'UTF8'), r->>6, r->>7,
           CASE WHEN json_typeof(r->8) = 'null' THEN NULL ELSE convert_to((r->8)::text, 'UTF8') END,
           recorded
      FROM json_array_elements(rows) WITH ORDINALITY AS u(r, n);
    PERFORM pg_notify(channel, (top + n_rows)::text);
    RETURN top || before;
END
$$;
