-- The console finds a message's causes, effects and flow, and lists outcomes by status.
CREATE INDEX log_correlation ON {schema}.log (correlation_id);
CREATE INDEX log_causation ON {schema}.log (causation_id);
CREATE INDEX outcomes_status ON {schema}.outcomes (status, updated_at);
CREATE INDEX held_status ON {schema}.held (status, subscription, global_position);
