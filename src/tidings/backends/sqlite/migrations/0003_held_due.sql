-- Finding the held messages that are due must not read every message waiting behind a dead one.
CREATE INDEX tidings_held_due ON tidings_held (subscription, status, due_at);
