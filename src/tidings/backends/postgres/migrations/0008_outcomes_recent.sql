-- The console's listing of every outcome, newest first, from an index rather than a sort of the
-- whole table (with a status, outcomes_status serves).
CREATE INDEX outcomes_recent ON {schema}.outcomes (updated_at);
