-- The console finds a message's causes, effects and flow, and lists outcomes by status.
CREATE INDEX tidings_log_correlation ON tidings_log (correlation_id);
CREATE INDEX tidings_log_causation ON tidings_log (causation_id);
CREATE INDEX tidings_outcomes_status ON tidings_outcomes (status, updated_at);
-- Dead letters listed and grouped without reading their tracebacks (a covering index).
CREATE INDEX tidings_held_summary ON tidings_held
    (status, subscription, global_position, id, partition, stream, message_id, type, attempts, error, due_at, first_failed_at, last_failed_at);
