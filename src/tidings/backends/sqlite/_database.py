"""One connection to a SQLite file: opened and migrated, its statements run on the event loop's
thread, another process's write lock waited out with asyncio sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import msgspec

from tidings.backends._sql import migrations, named_statements
from tidings.errors import ConfigurationError, StoreClosed, StoreError, StoreUnavailable

T = TypeVar("T")

#: SQLite's clock in epoch seconds (millisecond resolution).
_NOW: Final = "(julianday('now') - 2440587.5) * 86400.0"
#: Every statement of ``queries.sql`` by name.
QUERIES: Final = {
    name: text.replace("{now}", _NOW)
    for name, text in named_statements(__package__ or "", "queries.sql").items()
}
SYNCHRONOUS: Final = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
_json = msgspec.json.Encoder()


def json_array(values: Iterable[Any]) -> str:
    """``values`` as a JSON array: the one parameter a query reads a list from (``json_each``)."""
    return _json.encode(list(values)).decode()


def _is_locked(exc: sqlite3.Error) -> bool:
    """Whether another process holds a lock ``exc`` ran into (then try again later)."""
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def split_script(script: str) -> list[str]:
    """A SQL script's statements, split where SQLite itself would end them (triggers included)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        out.append(current.strip())
    return out


class Database:
    """The store's one connection. Nothing here blocks the event loop on another process: a
    statement that finds the file locked is tried again after a short asyncio sleep, until
    ``lock_timeout`` seconds have passed. A write transaction runs from ``BEGIN`` to ``COMMIT``
    without yielding, so that reads between transactions never see one half done."""

    def __init__(self, path: str, *, synchronous: str, lock_timeout: float) -> None:
        if synchronous.lower() not in SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r}: choose one of {', '.join(SYNCHRONOUS)}"
            )
        self.path = str(path)
        #: SQLite's ``synchronous`` setting the connection runs with
        self.synchronous = SYNCHRONOUS[synchronous.lower()]
        self._lock_timeout = lock_timeout
        self._cursor: sqlite3.Cursor | None = None

    async def open(self) -> None:
        """Connect and apply the migrations not applied yet."""
        conn = await self._retry_locked(self._connect)
        cursor = conn.cursor()
        try:
            await self._retry_locked(lambda: self._in_transaction(cursor, _migrate))
        except BaseException:
            conn.close()
            raise
        self._cursor = cursor

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.connection.close()
            self._cursor = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            script = QUERIES["connect"].replace("{synchronous}", self.synchronous)
            for statement in split_script(script):
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _live(self) -> sqlite3.Cursor:
        if self._cursor is None:
            raise StoreClosed()
        return self._cursor

    async def rows(self, name: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """The rows of the named query."""
        cursor = self._live()
        return await self._retry_locked(lambda: cursor.execute(QUERIES[name], params).fetchall())

    async def scan(self, name: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """The rows of a named query that reads the whole log, read on a connection of its own in
        another thread: on the loop's, it would hold up the event loop for as long as it lasts
        (WAL lets it read beside the store's own connection)."""
        self._live()  # raises StoreClosed when the store is closed

        def read() -> list[Any]:
            conn = sqlite3.connect(self.path, timeout=self._lock_timeout)
            try:
                return conn.execute(QUERIES[name], params).fetchall()
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite file {self.path!r}: {exc}") from exc

    @staticmethod
    def array(values: Iterable[Any]) -> str:
        """``values`` as a list parameter: a JSON array (read with ``json_each``)."""
        return json_array(values)

    async def transaction(
        self, fn: Callable[[sqlite3.Cursor], T], committed: Callable[[], None] | None = None
    ) -> T:
        """``fn``'s result, run in a write transaction of its own, committed (then
        ``committed()`` is called); run again from the start should another process hold the
        lock. Raises (with nothing written) ``StoreError`` when SQLite refuses what ``fn``
        writes (a constraint), ``StoreUnavailable`` when the file cannot be written."""
        cursor = self._live()
        return await self._retry_locked(lambda: self._in_transaction(cursor, fn, committed))

    def transaction_now(
        self, fn: Callable[[sqlite3.Cursor], T], committed: Callable[[], None] | None = None
    ) -> T | None:
        """:meth:`transaction` within this call, or None (with nothing written) when another
        process holds the lock."""
        return self.run_now(lambda cursor: self._in_transaction(cursor, fn, committed))

    def run_now(self, fn: Callable[[sqlite3.Cursor], T]) -> T | None:
        """``fn``'s result, run within this call (a statement outside a transaction is one of
        its own), or None when another process holds the lock."""
        try:
            return fn(self._live())
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                return None
            raise

    def _in_transaction(
        self,
        cursor: sqlite3.Cursor,
        fn: Callable[[sqlite3.Cursor], T],
        committed: Callable[[], None] | None = None,
    ) -> T:
        cursor.execute(QUERIES["begin"])
        try:
            result = fn(cursor)
            cursor.execute(QUERIES["commit"])
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute(QUERIES["rollback"])
            raise
        if committed is not None:
            committed()
        return result

    async def _retry_locked(self, step: Callable[[], T]) -> T:
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.0005
        while True:
            try:
                return step()
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"SQLite refused the write to {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                if not _is_locked(exc):
                    raise StoreUnavailable(f"SQLite file {self.path!r}: {exc}") from exc
                cause = exc
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"SQLite file {self.path!r} stayed locked by another process for "
                    f"{self._lock_timeout:.0f}s; find the process holding a long write "
                    "transaction, or raise lock_timeout"
                ) from cause
            await asyncio.sleep(delay)
            # Short waits: a busy writer in another process leaves the lock free only between
            # its transactions, for a moment each time.
            delay = min(delay * 2, 0.005)


def _migrate(cursor: sqlite3.Cursor) -> None:
    cursor.execute(QUERIES["create_migrations"])
    applied = {row[0] for row in cursor.execute(QUERIES["applied_migrations"]).fetchall()}
    for version, name, script in migrations(f"{__package__}.migrations"):
        if version not in applied:
            for statement in split_script(script):
                cursor.execute(statement)
            cursor.execute(QUERIES["record_migration"], (version, name))
