-- The console's listing of every outcome, newest first, from an index rather than a sort of the
-- whole table (with a status, tidings_outcomes_status serves).
CREATE INDEX tidings_outcomes_recent ON tidings_outcomes (updated_at);
