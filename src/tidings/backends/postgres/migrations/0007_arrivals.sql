-- What arrived through a broker (recorded with the header tidings-source), counted by the
-- console without reading the log: an index of just those messages.
CREATE INDEX log_arrivals ON {schema}.log (kind, type) INCLUDE (global_position, recorded_at)
    WHERE position('"tidings-source":'::bytea IN headers) > 0;
