"""The embedded default store: one SQLite file in WAL mode, no server."""

from tidings.backends.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
