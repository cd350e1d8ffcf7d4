"""The store's hottest statements, run through libpq itself (``psycopg.pq``) instead of a cursor.

A one-statement append is what a sequential caller waits for at every commit, and through an
``AsyncConnection``'s cursor psycopg spends more client time on it than the server does outside
its disk sync: converting the query, adapting each parameter, its prepared-statement bookkeeping,
and a wait that registers a timer besides the socket. Here a statement is prepared once per
connection under a name of its own, its parameters go out in binary (each placeholder is typed by
the cast written after it in the SQL), and the reply is awaited with one reader callback on the
event loop. psycopg still owns the connection: it opened it, the pool checks and replaces it, and
every other statement goes through it as usual.

Errors are psycopg's own classes: an error the server reports is raised as the class of its
SQLSTATE (``psycopg.errors.lookup``), and a lost connection surfaces as the
``psycopg.OperationalError`` libpq's wrapper raises, leaving ``conn.broken`` true.
"""

from __future__ import annotations

import asyncio
import re
import struct
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq

_Conn = psycopg.AsyncConnection[Any]
_Row = tuple[bytes | None, ...]

_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_SQLSTATE = pq.DiagnosticField.SQLSTATE
#: SQLSTATE 26000: the named prepared statement is not there (the session was reset).
_NOT_PREPARED = "26000"
_INT8 = struct.Struct(">q").pack
_INT4 = struct.Struct(">i").pack


def _text(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


#: The casts a placeholder may carry: the type's OID and the binary encoding of a Python value.
#: Text and JSON go as UTF-8 (the store's connections use client_encoding UTF8).
_TYPES: dict[bytes, tuple[int, Callable[[Any], bytes]]] = {
    b"text": (25, _text),
    b"json": (114, _text),
    b"bytea": (17, bytes),
    b"bigint": (20, _INT8),
    b"integer": (23, _INT4),
}
_PLACEHOLDER = re.compile(rb"%\((\w+)\)s(?:::(\w+))?")


class Statement:
    """One named statement of ``queries.sql``, its ``%(name)s::type`` placeholders turned into
    ``$n`` (the first occurrence of a name must carry a cast that :data:`_TYPES` knows)."""

    __slots__ = ("encoders", "name", "names", "text", "types")

    def __init__(self, name: str, query: bytes) -> None:
        self.name = f"tidings_{name}".encode()
        self.names: list[str] = []
        self.types: list[int] = []
        self.encoders: list[Callable[[Any], bytes]] = []

        def number(found: re.Match[bytes]) -> bytes:
            param, cast = found.group(1).decode(), found.group(2)
            if param not in self.names:
                if cast not in _TYPES:
                    raise ValueError(
                        f"statement {name}: placeholder {param} needs a cast, one of "
                        f"{', '.join(t.decode() for t in _TYPES)}"
                    )
                oid, encode = _TYPES[cast]
                self.names.append(param)
                self.types.append(oid)
                self.encoders.append(encode)
            return b"$%d" % (self.names.index(param) + 1) + (b"::" + cast if cast else b"")

        self.text = _PLACEHOLDER.sub(number, query)

    def values(self, params: Mapping[str, Any]) -> list[bytes | None]:
        return [
            None if (value := params[param]) is None else encode(value)
            for param, encode in zip(self.names, self.encoders, strict=True)
        ]


#: The statements prepared on each connection (a connection the pool replaces is a new key).
_prepared: weakref.WeakKeyDictionary[_Conn, set[bytes]] = weakref.WeakKeyDictionary()


async def fetch_row(conn: _Conn, statement: Statement, params: Mapping[str, Any]) -> _Row:
    """Run ``statement`` (autocommit) and return its one row, as text-format values."""
    values = statement.values(params)
    prepared = _prepared.setdefault(conn, set())
    if statement.name not in prepared:
        await _prepare(conn, statement)
        prepared.add(statement.name)
    try:
        return await _execute(conn, statement, values)
    except psycopg.Error as exc:
        if exc.sqlstate != _NOT_PREPARED:
            raise
    # The session lost its prepared statements (DISCARD ALL, say): nothing ran; prepare again.
    await _prepare(conn, statement)
    return await _execute(conn, statement, values)


async def _prepare(conn: _Conn, statement: Statement) -> None:
    pgconn = conn.pgconn
    pgconn.send_prepare(statement.name, statement.text, statement.types)
    (result,) = await _results(conn)
    if result.status != _COMMAND_OK:
        raise _error(result)


async def _execute(conn: _Conn, statement: Statement, values: Sequence[bytes | None]) -> _Row:
    conn.pgconn.send_query_prepared(statement.name, values, [1] * len(values))
    (result,) = await _results(conn)
    if result.status != _OK:
        raise _error(result)
    return tuple(result.get_value(0, column) for column in range(result.nfields))


async def _results(conn: _Conn) -> list[pq.abc.PGresult]:
    """Flush what was sent, then gather the results up to the end of the command."""
    pgconn = conn.pgconn
    fd = pgconn.socket
    loop = asyncio.get_running_loop()
    while pgconn.flush():
        await _ready(loop, fd, loop.add_writer, loop.remove_writer)
    results: list[pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():
            await _ready(loop, fd, loop.add_reader, loop.remove_reader)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


async def _ready(
    loop: asyncio.AbstractEventLoop,
    fd: int,
    add: Callable[..., None],
    remove: Callable[[int], object],
) -> None:
    ready = loop.create_future()
    add(fd, _wake, ready)
    try:
        await ready
    finally:
        remove(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    state = (result.error_field(_SQLSTATE) or b"").decode("ascii", "replace")
    message = (result.error_message or b"").decode("utf-8", "replace").strip()
    try:
        cls = psycopg.errors.lookup(state)
    except KeyError:
        cls = psycopg.DatabaseError
    return cls(message)
