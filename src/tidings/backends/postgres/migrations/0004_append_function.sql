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
    lock_class integer, lock_key integer, channel text,
    streams text[], op_streams text[], op_expected bigint[], op_sizes integer[],
    row_streams text[], ids text[], kinds text[], types text[], versions integer[],
    datas bytea[], correlation_ids text[], causation_ids text[], headers bytea[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    before bigint[];
    current bigint[];
    positions bigint[];
    at integer;
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
    positions := array_fill(0::bigint, ARRAY[cardinality(ids)]);
    FOR op IN 1 .. cardinality(op_streams) LOOP
        at := array_position(streams, op_streams[op]);
        IF op_expected[op] <> -2 AND op_expected[op] <> current[at] THEN
            RAISE EXCEPTION USING ERRCODE = 'TD001',
                MESSAGE = 'tidings: expected version of ' || op_streams[op] || ' is '
                          || op_expected[op] || ', found ' || current[at];
        END IF;
        FOR k IN 1 .. op_sizes[op] LOOP
            n_rows := n_rows + 1;
            current[at] := current[at] + 1;
            positions[n_rows] := current[at];
        END LOOP;
    END LOOP;
    INSERT INTO {schema}.log (global_position, stream, stream_position, id, kind, type, version,
                              data, correlation_id, causation_id, headers, recorded_at)
    SELECT top + u.n, u.s, positions[u.n], u.i, u.k, u.t, u.v, u.d, u.c, u.ca, u.h, recorded
      FROM unnest(row_streams, ids, kinds, types, versions, datas, correlation_ids,
                  causation_ids, headers) WITH ORDINALITY AS u(s, i, k, t, v, d, c, ca, h, n);
    PERFORM pg_notify(channel, (top + n_rows)::text);
    RETURN top || before;
END
$$;
