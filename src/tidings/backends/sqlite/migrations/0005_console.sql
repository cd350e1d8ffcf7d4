-- The console finds a message's causes, effects and flow, and lists outcomes by status.
CREATE INDEX tidings_log_correlation ON tidings_log (correlation_id);
CREATE INDEX tidings_log_causation ON tidings_log (causation_id);
CREATE INDEX tidings_outcomes_status ON tidings_outcomes (status, updated_at);
CREATE INDEX tidings_held_status ON tidings_held (status, subscription, global_position);
