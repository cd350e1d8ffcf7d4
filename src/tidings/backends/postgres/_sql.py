"""The SQL text of the PostgreSQL store, read from the package's ``.sql`` files and bound to a
schema (quoted as an identifier, never pasted in as text)."""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

from psycopg import sql

from tidings.errors import ConfigurationError

#: The database clock in epoch seconds: every lease and due time is measured on it.
_NOW: LiteralString = "extract(epoch FROM clock_timestamp())::float8"
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


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


def _body(text: str) -> str:
    return "\n".join(
        line for line in text.strip().splitlines() if not line.lstrip().startswith("--")
    ).strip()


def queries(schema: str) -> dict[str, bytes]:
    """Every named statement of ``queries.sql``, bound to ``schema``, as the bytes sent: composed
    once here, not at every execution (and so cached by the driver's query conversion)."""
    text = resources.files(__package__).joinpath("queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    found: dict[str, bytes] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = _bind(_body(body), schema).as_bytes(None)
    return found


def migrations(schema: str) -> list[tuple[int, str, sql.Composed]]:
    """The numbered migrations, in order, bound to ``schema``."""
    found = []
    for entry in resources.files(f"{__package__}.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append(
                (int(name.split("_", 1)[0]), name, _bind(entry.read_text("utf-8"), schema))
            )
    return sorted(found, key=lambda m: m[0])
