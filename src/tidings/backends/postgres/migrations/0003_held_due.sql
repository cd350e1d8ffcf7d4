-- Finding the held messages that are due must not read every message waiting behind a dead one.
CREATE INDEX held_due ON {schema}.held (subscription, status, due_at);
