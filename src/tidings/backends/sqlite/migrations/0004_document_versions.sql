-- Documents are versioned like streams: a handler's read is checked when it commits. A deleted
-- document keeps its row (data NULL) so that its version never goes back: a reader of an older
-- version then conflicts instead of overwriting a write it never saw.
CREATE TABLE tidings_documents_versioned (
    collection TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    data       BLOB,
    version    INTEGER NOT NULL,
    PRIMARY KEY (collection, key)
);

INSERT INTO tidings_documents_versioned (collection, key, data, version)
SELECT collection, key, data, 1 FROM tidings_documents;

DROP TABLE tidings_documents;

ALTER TABLE tidings_documents_versioned RENAME TO tidings_documents;
