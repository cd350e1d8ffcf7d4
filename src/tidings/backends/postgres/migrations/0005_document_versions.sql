-- Documents are versioned like streams: a handler's read is checked when it commits. A deleted
-- document keeps its row (data NULL) so that its version never goes back: a reader of an older
-- version then conflicts instead of overwriting a write it never saw.
ALTER TABLE {schema}.documents ALTER COLUMN data DROP NOT NULL;
ALTER TABLE {schema}.documents ADD COLUMN version bigint NOT NULL DEFAULT 1;
ALTER TABLE {schema}.documents ALTER COLUMN version DROP DEFAULT;
