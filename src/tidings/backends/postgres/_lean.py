"""The store's hottest statements, run through libpq itself (``psycopg.pq``) instead of a cursor.

A one-statement append is what a sequential caller waits for at every commit, and through an
``AsyncConnection``'s cursor psycopg spends more client time on it than the server does outside
its disk sync: converting the query, adapting each parameter, its prepared-statement bookkeeping,
and a wait that registers a timer besides the socket. Here a statement is prepared once per
connection under a name of its own, its parameters go out in binary (each placeholder is typed by
the cast written after it in the SQL), and the reply is awaited through a reader callback left
registered on the event loop between statements (:func:`release` unregisters it). psycopg still
owns the connection: it opened it, the pool checks and replaces it, and every other statement
goes through it as usual.

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
        """The parameters encoded for :func:`fetch_row`."""
        return [
            None if (value := params[param]) is None else encode(value)
            for param, encode in zip(self.names, self.encoders, strict=True)
        ]


class _Session:
    """What this module keeps of one connection: the statements prepared on it, and the reader
    callback it leaves registered between statements (one ``epoll_ctl`` pair less per round trip)
    with the future that callback wakes."""

    __slots__ = ("fd", "prepared", "waiter")

    def __init__(self) -> None:
        self.prepared: set[bytes] = set()
        self.waiter: asyncio.Future[None] | None = None
        #: the socket the reader callback is registered on, or None
        self.fd: int | None = None


#: The sessions by connection (a connection the pool replaces is a new key).
_sessions: weakref.WeakKeyDictionary[_Conn, _Session] = weakref.WeakKeyDictionary()


async def fetch_row(conn: _Conn, statement: Statement, values: Sequence[bytes | None]) -> _Row:
    """Run ``statement`` (autocommit) with ``values`` (binary, in the order of its ``names``:
    see :meth:`Statement.values`) and return its one row, as text-format values."""
    session = _sessions.get(conn)
    if session is None:
        session = _sessions[conn] = _Session()
    if statement.name not in session.prepared:
        await _prepare(conn, session, statement)
    try:
        return await _execute(conn, session, statement, values)
    except psycopg.Error as exc:
        if exc.sqlstate != _NOT_PREPARED:
            raise
    # The session lost its prepared statements (DISCARD ALL, say): nothing ran; prepare again.
    session.prepared.clear()
    await _prepare(conn, session, statement)
    return await _execute(conn, session, statement, values)


def release(conn: _Conn) -> None:
    """Unregister the reader callback left on ``conn``'s socket. The store calls it whenever the
    connection leaves its hands (given back to the pool, closed): a socket closed while registered
    would leave its number registered with the event loop, and a new socket given that number
    would then never be watched."""
    session = _sessions.get(conn)
    if session is not None and session.fd is not None:
        asyncio.get_running_loop().remove_reader(session.fd)
        session.fd = None


async def _prepare(conn: _Conn, session: _Session, statement: Statement) -> None:
    conn.pgconn.send_prepare(statement.name, statement.text, statement.types)
    (result,) = await _results(conn, session)
    if result.status != _COMMAND_OK:
        raise _error(result)
    session.prepared.add(statement.name)


async def _execute(
    conn: _Conn, session: _Session, statement: Statement, values: Sequence[bytes | None]
) -> _Row:
    conn.pgconn.send_query_prepared(statement.name, values, [1] * len(values))
    (result,) = await _results(conn, session)
    if result.status != _OK:
        raise _error(result)
    return tuple(result.get_value(0, column) for column in range(result.nfields))


async def _results(conn: _Conn, session: _Session) -> list[pq.abc.PGresult]:
    """Flush what was sent, then gather the results up to the end of the command."""
    pgconn = conn.pgconn
    fd = pgconn.socket
    loop = asyncio.get_running_loop()
    while pgconn.flush():
        writable = loop.create_future()
        loop.add_writer(fd, _wake, writable)
        try:
            await writable
        finally:
            loop.remove_writer(fd)
    results: list[pq.abc.PGresult] = []
    while True:
        # Nothing can have arrived before the first wait: no read is tried before it.
        if pgconn.is_busy():
            session.waiter = complete = loop.create_future()
            # Registered once and left so; a second add_reader only swaps the callback.
            loop.add_reader(fd, _on_readable, loop, fd, pgconn, session)
            session.fd = fd
            await complete
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _on_readable(
    loop: asyncio.AbstractEventLoop, fd: int, pgconn: pq.abc.PGconn, session: _Session
) -> None:
    """Read what arrived; wake the waiter once a whole result is in (not at every packet)."""
    waiter = session.waiter
    if waiter is None or waiter.done():
        # Nobody waits (a notice, the server closing, a cancelled wait): unregister rather than
        # be called at every turn of the loop until the connection is used again.
        session.waiter = None
        loop.remove_reader(fd)
        session.fd = None
        return
    try:
        pgconn.consume_input()
        if pgconn.is_busy():
            return
    except psycopg.Error as exc:  # the connection is lost: the waiter raises it
        session.waiter = None
        waiter.set_exception(exc)
        return
    session.waiter = None
    waiter.set_result(None)


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
    return cls(message, info=result)  # info: the error's diag (constraint name, ...)
