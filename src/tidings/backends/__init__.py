"""The backends, and the one place store URLs are parsed: :func:`open_store`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tidings.errors import ConfigurationError
from tidings.store import Store

__all__ = ["open_store"]


def open_store(url: str) -> Store:
    """Build the store a URL names: ``memory://``, ``sqlite:///path/to/file.db`` (absolute with
    four slashes: ``sqlite:////var/lib/app.db``; ``?synchronous=normal`` trades the last commits on a
    power cut for speed), or ``postgresql://user:password@host:5432/dbname?schema=shop`` (also
    ``postgres://``; ``schema`` defaults to ``tidings``, other options go to libpq)."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "memory":
        from tidings.backends.memory import MemoryStore

        return MemoryStore()
    if parts.scheme == "sqlite":
        from tidings.backends.sqlite import SqliteStore

        path = parts.path
        if parts.netloc:
            raise ConfigurationError(
                f"store URL {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigurationError(f"store URL {url!r} names no file: use sqlite:///app.db")
        return SqliteStore(path, **options)
    if parts.scheme in ("postgresql", "postgres"):
        from tidings.backends.postgres import PostgresStore

        schema = options.pop("schema", "tidings")
        return PostgresStore(urlunsplit(parts._replace(query=urlencode(options))), schema=schema)
    raise ConfigurationError(
        f"unknown store URL {url!r}: use memory://, sqlite:///path.db, postgresql://host/db"
    )
