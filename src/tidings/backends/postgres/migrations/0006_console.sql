-- The console finds a message's causes, effects and flow, and lists outcomes by status.
CREATE INDEX log_correlation ON {schema}.log (correlation_id);
CREATE INDEX log_causation ON {schema}.log (causation_id);
CREATE INDEX outcomes_status ON {schema}.outcomes (status, updated_at);
-- Dead letters listed and grouped without reading their tracebacks (index-only scans).
CREATE INDEX held_summary ON {schema}.held (status, subscription, global_position)
    INCLUDE (id, partition, stream, message_id, type, attempts, error, due_at, first_failed_at,
             last_failed_at);
