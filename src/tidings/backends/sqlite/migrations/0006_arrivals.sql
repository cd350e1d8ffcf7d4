-- What arrived through a broker (recorded with the header tidings-source), counted by the
-- console without reading the log: an index of just those messages.
CREATE INDEX tidings_log_arrivals ON tidings_log (kind, type, global_position, recorded_at)
    WHERE instr(headers, CAST('"tidings-source":' AS BLOB)) > 0;
