"""Numbered SQL migrations of the PostgreSQL store (``{schema}`` is its schema, quoted)."""
