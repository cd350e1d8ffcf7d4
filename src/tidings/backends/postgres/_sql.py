"""The SQL text of the PostgreSQL store, read from the package's ``.sql`` files and bound to a
schema (quoted as an identifier, never pasted in as text)."""

from __future__ import annotations

import re
from typing import LiteralString

from psycopg import sql

from tidings.backends._sql import migrations as read_migrations
from tidings.backends._sql import named_statements
from tidings.errors import ConfigurationError

#: The database clock in epoch seconds: every lease and due time is measured on it.
_NOW: LiteralString = "extract(epoch FROM clock_timestamp())::float8"
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def validate_schema(schema: str) -> str:
    """Check a schema name: lower-case letters, digits and ``_``, at most 63 characters."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise ConfigurationError(
            f"schema name {schema!r} is not allowed: use lower-case letters, digits and _ "
            "(starting with a letter or _), at most 63 characters"
        )
    return schema


def _bind(text: str, schema: str) -> sql.Composed:
    # The text comes from this package's own files, never from input: it is trusted SQL.
    template = sql.SQL(text)
    return template.format(schema=sql.Identifier(schema), now=sql.SQL(_NOW))


def queries(schema: str) -> dict[str, bytes]:
    """Every named statement of ``queries.sql``, bound to ``schema``, as the bytes sent: composed
    once here, not at every execution (and so cached by the driver's query conversion)."""
    return {
        name: _bind(body, schema).as_bytes(None)
        for name, body in named_statements(__package__ or "").items()
    }


def migrations(schema: str) -> list[tuple[int, str, sql.Composed]]:
    """The numbered migrations, in order, bound to ``schema``."""
    return [
        (version, name, _bind(script, schema))
        for version, name, script in read_migrations(f"{__package__}.migrations")
    ]
