"""The embedded default store: one SQLite file in WAL mode, no server.

Writes are committed on the event loop's own thread, in groups: every transaction that reaches
``commit()`` in one loop iteration is committed in one SQLite transaction (group commit), so
concurrent callers share one disk sync instead of queueing for one each. Reads run on the
caller's thread too, on the same connection, between groups. Neither hops to a worker thread: on
the 2-core VMs this is built on, a round trip to another thread costs about 300 µs, more than the
disk sync itself (docs/architecture.md has the numbers). Several processes may open the same
file; SQLite's write lock orders them, and a lock held by another process is waited for with
asyncio sleeps, never reported as "database is locked" and never blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from asyncio import get_running_loop
from collections.abc import Callable, Sequence
from importlib import resources
from threading import get_ident
from time import time as time_now
from typing import Any, LiteralString

import msgspec
from msgspec.structs import astuple

from tidings.backends._shared import held_from_row, others_ready, settle
from tidings.errors import (
    ConfigurationError,
    LeaseLost,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from tidings.messages import Envelope, NewMessage
from tidings.store import (
    ANY,
    Appended,
    AppendOp,
    AuditEntry,
    Held,
    Outcome,
    PartitionInfo,
    Store,
    Transaction,
)

# Payloads are read as BLOB whatever was stored, so a row damaged by hand fails as a decode
# error naming the row, not inside the driver.
_COLUMNS: LiteralString = (
    "id, kind, type, version, stream, stream_position, global_position, recorded_at, "
    "CAST(data AS BLOB), correlation_id, causation_id, CAST(headers AS BLOB)"
)
_INSERT: LiteralString = (
    "INSERT INTO tidings_log (global_position, stream, stream_position, id, kind, type, version, "
    "data, correlation_id, causation_id, headers, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
# A log row is (global_position, stream, stream_position), a NewMessage's fields in order, then
# recorded_at: _row and _apply_alone build it with astuple.
if NewMessage.__struct_fields__ != (
    "id", "kind", "type", "version", "data", "correlation_id", "causation_id", "headers"
):  # fmt: skip
    raise ImportError("NewMessage's fields are no longer in the order of the log's columns")
_UPSERT_HELD: LiteralString = (
    "INSERT INTO tidings_held (subscription, partition, stream, global_position, message_id, type, "
    "status, attempts, error, traceback, history, due_at, first_failed_at, last_failed_at) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (subscription, global_position) DO UPDATE SET "
    "status = excluded.status, attempts = excluded.attempts, error = excluded.error, "
    "traceback = excluded.traceback, history = excluded.history, due_at = excluded.due_at, "
    "first_failed_at = coalesce(tidings_held.first_failed_at, excluded.first_failed_at), "
    "last_failed_at = excluded.last_failed_at"
)
_HELD_COLUMNS: LiteralString = (
    "subscription, partition, stream, global_position, message_id, type, status, attempts, error, "
    "traceback, history, due_at, first_failed_at, last_failed_at, id"
)
_NOW: LiteralString = "(julianday('now') - 2440587.5) * 86400.0"
_encoder = msgspec.json.Encoder()
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
#: The most transactions one group commit takes.
_GROUP_LIMIT = 512
_ID_CHUNK = 500

_Pending = tuple[Transaction, "asyncio.Future[list[Appended]]"]
#: a transaction's appends, or why it was refused
Result = tuple[list[Appended] | None, Exception | None]


class _Locked(Exception):
    """Another process holds the write lock; try again later."""


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class _Refused(Exception):
    """One transaction of a group cannot be applied (its error is in ``error``)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("tidings.backends.sqlite.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text("utf-8")))
    return sorted(found)


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements the way SQLite itself would (triggers included)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        out.append(current.strip())
    return out


class SqliteStore(Store):
    """A store in one SQLite file. Use ``App(store="sqlite:///app.db")`` or build it directly."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "full",
        lock_timeout: float | str = 60.0,
    ) -> None:
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r}: choose one of {', '.join(_SYNCHRONOUS)}"
            )
        self.path = path
        self.url = f"sqlite:///{path}"
        self._synchronous = _SYNCHRONOUS[synchronous.lower()]
        self._lock_timeout = float(lock_timeout)
        self._conn: sqlite3.Connection | None = None
        #: a cursor of _conn for group commits' statements: conn.execute makes one per statement
        self._cursor: sqlite3.Cursor | None = None
        # What this process last committed or read. Another process may append behind its back:
        # then an insert planned on it collides with a stored position, and the group is planned
        # again on what is stored (see _apply_group).
        self._top: int | None = None
        self._versions: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the loop's ready callbacks, and the loop, when it is asyncio's own (which keeps them in
        #: ``_ready`` and its thread in ``_thread_id``); None for another kind: see _may_commit_now
        self._ready: Any = None
        self._base_loop: Any = None
        self._pending: list[_Pending] = []
        self._flushing = False
        self._closed = True

    # --- life cycle ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # The connection never waits inside SQLite for another process's lock (busy_timeout 0):
        # a locked database is retried with asyncio sleeps, so the event loop keeps running.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        if not self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._ready = getattr(self._loop, "_ready", None)
        self._base_loop = self._loop if isinstance(self._loop, asyncio.BaseEventLoop) else None
        try:
            conn: sqlite3.Connection = await self._retry_locked(self._connect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite file {self.path!r}: {exc}") from exc
        try:
            await self._retry_locked(lambda: self._migrate(conn))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._cursor = conn.cursor()
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flushing:
            # Let a flush that is waiting for another process's lock finish or fail first.
            done = asyncio.get_running_loop().create_future()
            self._pending.append((Transaction(), done))
            await asyncio.wait([done], timeout=self._lock_timeout)
        for fut in [fut for _, fut in self._pending]:
            settle(fut, None, StoreClosed())
        self._pending.clear()
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._cursor = None

    async def _retry_locked(self, step: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.0005
        while True:
            try:
                return step()
            except _Locked as exc:
                cause: BaseException = exc.__cause__ or exc
            except sqlite3.OperationalError as exc:
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
            # Short waits: a busy writer in another process leaves the lock free only between its
            # groups, for a moment each time, and a waiter must try often to find one of them.
            delay = min(delay * 2, 0.005)

    # --- writing: group commit on the event loop ----------------------------------------------

    def _begin(self, conn: sqlite3.Connection | sqlite3.Cursor) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _Locked() from exc
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        self._begin(conn)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tidings_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM tidings_migrations")}
            for version, name, script in _migrations():
                if version in applied:
                    continue
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO tidings_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def commit_now(self, tx: Transaction) -> list[Appended] | None:
        if not self._may_commit_now():
            return None
        done = self._apply_alone(tx)
        if done is not None:
            return done
        assert self._conn is not None
        try:
            ((result, error),) = self._commit_txs(self._conn, [tx])
        except _Locked:
            return None  # another process writes: queue, and wait for it
        if error is not None:
            raise error
        assert result is not None
        return result

    def append_now(self, stream: str, messages: Sequence[NewMessage], expected: int) -> int | None:
        """``commit_now`` of one append (a decided invoke's every commit), without the
        Transaction: the stream's version after it, or None when ``commit`` must do it.
        (_may_commit_now, written out for asyncio's own loop running in this thread.)"""
        if self._closed:
            raise StoreClosed()
        loop = self._base_loop
        if loop is None or loop._thread_id != get_ident():
            if not self._may_commit_now():
                return None
        elif self._flushing or (self._ready and others_ready(loop)):
            return None
        return self._append_alone(stream, messages, expected)

    def _may_commit_now(self) -> bool:
        """Whether a commit can be made in this call: nothing else could join its group."""
        if self._closed:
            raise StoreClosed()
        loop = self._base_loop
        # The store's loop is the one running here when it is asyncio's own loop and runs in this
        # thread (a thread runs one loop at a time). Only otherwise is asyncio asked, whose
        # get_running_loop() makes a getpid() system call every time on Python 3.11.
        if loop is None or loop._thread_id != get_ident():
            loop = get_running_loop()
            if loop is not self._loop:
                raise StoreError(
                    "this SQLite store was opened in another event loop; open one App per event "
                    "loop"
                )
        # Nothing else can run before a flush would: nobody could join this group, so commit
        # now, in this call, rather than one loop iteration later (a sequential caller's case).
        # (others_ready(loop), written out for its usual case: nothing ready at all.)
        ready = self._ready
        return not (
            self._flushing or ready is None or (ready and others_ready(loop)) or self._conn is None
        )

    async def commit(self, tx: Transaction) -> list[Appended]:
        done = self.commit_now(tx)
        if done is not None:
            return done
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Appended]] = loop.create_future()
        self._pending.append((tx, fut))
        if not self._flushing:
            self._flushing = True
            # call_soon runs the flush after every callback already ready in this loop iteration:
            # all callers that reach commit() meanwhile share one disk sync.
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        conn = self._conn
        if conn is None:
            self._flushing = False
            for _, fut in group:
                settle(fut, None, StoreClosed())
            return
        try:
            self._commit_group(conn, group)
        except _Locked:
            assert self._loop is not None
            self._pending[:0] = group
            self._loop.create_task(self._flush_when_unlocked())
            return
        if self._pending:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        else:
            self._flushing = False

    async def _flush_when_unlocked(self) -> None:
        conn = self._conn
        try:
            while self._pending and conn is not None:
                group, self._pending = self._pending, []
                try:
                    await self._retry_locked(lambda g=group: self._commit_group(conn, g))  # type: ignore[misc]
                except Exception as exc:
                    for _, fut in group:
                        settle(fut, None, exc)
        finally:
            self._flushing = False

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Pending]) -> None:
        """Commit a group of transactions in one SQLite transaction and settle their futures.
        Raises ``_Locked`` (with nothing settled) when another process holds the write lock."""
        outcomes = self._commit_txs(conn, [tx for tx, _ in group])
        for (_, fut), (result, error) in zip(group, outcomes, strict=True):
            settle(fut, result, error)

    def _commit_txs(self, conn: sqlite3.Connection, txs: list[Transaction]) -> list[Result]:
        """Commit ``txs`` in one SQLite transaction: each one's result or why it was refused.

        The fast path does not look up message ids: a duplicate id makes the insert fail, and the
        group is planned again, this time skipping ids already stored. A transaction whose expected
        version does not hold is refused alone; the others commit. Raises ``_Locked`` when another
        process holds the write lock.
        """
        if len(txs) == 1 and conn is self._conn:
            done = self._apply_alone(txs[0])
            if done is not None:
                return [(done, None)]
        try:
            return self._apply_group(conn, txs, False)
        except sqlite3.IntegrityError:
            try:
                return self._apply_group(conn, txs, True)
            except sqlite3.IntegrityError:
                return self._apply_one_by_one(conn, txs)
        except _Locked:
            raise
        except Exception as exc:
            failure = exc if isinstance(exc, StoreError) else StoreUnavailable(f"SQLite: {exc}")
            return [(None, failure)] * len(txs)

    def _apply_one_by_one(self, conn: sqlite3.Connection, txs: list[Transaction]) -> list[Result]:
        outcomes: list[Result] = []
        for tx in txs:
            try:
                outcomes.extend(self._apply_group(conn, [tx], True))
            except sqlite3.Error as exc:
                outcomes.append((None, StoreError(f"SQLite refused the append: {exc}")))
        return outcomes

    def _apply_group(
        self, conn: sqlite3.Connection, txs: list[Transaction], check_ids: bool
    ) -> list[Result]:
        cur = self._cursor if conn is self._conn and self._cursor is not None else conn.cursor()
        self._begin(cur)
        try:
            if self._top is None or any(not op.messages for tx in txs for op in tx.appends):
                # Forgotten after a failure, or an append of nothing, whose result would rest on
                # what is remembered with no insert to check it against the file: read it all.
                self._versions.clear()
                self._top = conn.execute(
                    "SELECT coalesce(max(global_position), 0) FROM tidings_log"
                ).fetchone()[0]
            top = self._top
            versions: dict[str, int] = {}
            stored: dict[str, int] = {}  # id -> global position, for ids seen in this group
            rows: list[tuple[Any, ...]] = []
            outcomes: list[Result] = []
            for tx in txs:
                if tx.scheduled or tx.held:
                    # Due times are compared with SQLite's clock, so they are computed on it too.
                    now = conn.execute("SELECT " + _NOW).fetchone()[0]
                    break
            else:
                now = time.time()
            for tx in txs:
                try:
                    top, tx_rows, results = self._plan(
                        conn, tx, top, versions, stored, check_ids, now
                    )
                except _Refused as refused:
                    outcomes.append((None, refused.error))
                    continue
                rows.extend(tx_rows)
                outcomes.append((results, None))
            if len(rows) == 1:
                cur.execute(_INSERT, rows[0])
            elif rows:
                cur.executemany(_INSERT, rows)
            cur.execute("COMMIT")
        except BaseException:
            self._top = None
            _rollback(conn)
            raise
        self._top = top
        if len(self._versions) > 100_000:
            self._versions.clear()
        self._versions.update(versions)
        return outcomes

    def _apply_alone(self, tx: Transaction) -> list[Appended] | None:
        """Commit a transaction of one append with ``_append_alone``, or None when it cannot
        (then the long way, ``_commit_txs``, must)."""
        appends = tx.appends
        if len(appends) != 1 or tx.beyond_appends():
            return None
        op = appends[0]
        version = self._append_alone(op.stream, op.messages, op.expected_version)
        if version is None:
            return None
        assert self._top is not None
        return [Appended(op.stream, version, self._top)]

    def _append_alone(
        self, stream: str, messages: Sequence[NewMessage], expected: int
    ) -> int | None:
        """Commit one append, to a stream whose version is known here (or expected to be new)
        and as expected, in its own SQLite transaction: a sequential caller's every commit,
        without the planning a group needs. Returns the stream's version after it, or None when
        the long way (``_commit_txs``) must do it: for anything else, and after any SQLite
        error, rolled back (a collision with a row another process appended, a lock, a failed
        write), so that there is one place that finds out and tells what went wrong.

        Written out (no call to _row for one message): right after a disk sync every cache is
        cold, and each step here costs several times what it costs warm.
        """
        top = self._top
        if top is None or not messages:
            # (nothing inserted would check what is remembered: the long way reads)
            return None
        # A stream expected to be new is not looked up: were it not new, its position 1 would
        # break the log's unique positions (as in _plan).
        version = 0 if expected == 0 else self._versions.get(stream)
        if version is None or (expected != version and expected != ANY):
            return None
        cur = self._cursor
        assert cur is not None
        top += 1
        version += 1
        rows = None
        if len(messages) == 1:
            # _row(), written out: a NewMessage's fields are the row's, in order
            row = (top, stream, version, *astuple(messages[0]), time_now())
        else:
            rows = _rows(top, stream, version, messages)
            top += len(messages) - 1
            version += len(messages) - 1
        # What the commit leaves is remembered before the commit; a failure below forgets it
        # all (no top: the next group reads what is stored).
        self._top = top
        versions = self._versions
        if len(versions) > 100_000:
            versions.clear()
        versions[stream] = version
        try:
            cur.execute("BEGIN IMMEDIATE")
            if rows is None:
                cur.execute(_INSERT, row)
            else:
                cur.executemany(_INSERT, rows)
            cur.execute("COMMIT")
        except BaseException as exc:
            self._top = None
            # (should even the rollback fail, the long way finds the connection unusable, says so)
            with contextlib.suppress(sqlite3.Error):
                _rollback(cur.connection)
            if isinstance(exc, sqlite3.Error):
                return None
            raise
        return version

    def _plan(
        self,
        conn: sqlite3.Connection,
        tx: Transaction,
        top: int,
        versions: dict[str, int],
        stored: dict[str, int],
        check_ids: bool,
        now: float,
    ) -> tuple[int, list[tuple[Any, ...]], list[Appended]]:
        # Work on copies so that a refused transaction leaves the group's view untouched.
        local_versions: dict[str, int] = {}
        local_ids: dict[str, int] = {}
        rows: list[tuple[Any, ...]] = []
        results: list[Appended] = []
        for op in tx.appends:
            stream = op.stream
            version = local_versions.get(stream)
            if version is None:
                version = versions.get(stream)
            cached = version is None
            if cached:
                version = self._versions.get(stream)
            if version is None and op.expected_version == 0 and not check_ids:
                # Expected to be new: were it not, its position 1 would break the log's unique
                # (stream, position), and the group is planned again with every version read.
                version = 0
            if version is None:
                version = conn.execute(
                    "SELECT coalesce(max(stream_position), 0) FROM tidings_log WHERE stream = ?",
                    (stream,),
                ).fetchone()[0]
                cached = False
            messages = op.messages
            if check_ids:
                known = self._known_ids(conn, [m.id for m in messages], stored, local_ids)
                if known and len(known) == len(messages):
                    results.append(Appended(stream, version, known[messages[-1].id]))
                    local_versions[stream] = version
                    continue
                messages = [m for m in messages if m.id not in known]
            if op.expected_version != ANY and op.expected_version != version and cached:
                # What this process knew may be stale (another process appended since): a
                # refusal is decided on what is stored.
                version = conn.execute(
                    "SELECT coalesce(max(stream_position), 0) FROM tidings_log WHERE stream = ?",
                    (stream,),
                ).fetchone()[0]
            if op.expected_version != ANY and op.expected_version != version:
                if not check_ids and messages:
                    known = self._known_ids(conn, [m.id for m in messages], stored, local_ids)
                    if len(known) == len(messages):
                        results.append(Appended(stream, version, known[messages[-1].id]))
                        continue
                raise _Refused(WrongExpectedVersion(stream, op.expected_version, version))
            for m in messages:
                version += 1
                top += 1
                local_ids[m.id] = top
                rows.append(_row(top, stream, version, m, now))
            local_versions[stream] = version
            results.append(Appended(stream, version, top))
        for move in tx.checkpoints:
            found = conn.execute(
                "SELECT owner, position FROM tidings_partitions WHERE subscription = ? AND partition = ?",
                (move.subscription, move.partition),
            ).fetchone()
            if found is None or found[0] != move.owner or found[1] != move.expected:
                raise _Refused(LeaseLost())
        # Every check passed: from here on nothing refuses this transaction.
        if tx.beyond_appends():
            self._apply_rest(conn, tx, now)
        versions.update(local_versions)
        stored.update(local_ids)
        return top, rows, results

    def _apply_rest(self, conn: sqlite3.Connection, tx: Transaction, now: float) -> None:
        for move in tx.checkpoints:
            conn.execute(
                "UPDATE tidings_partitions SET position = ? WHERE subscription = ? AND partition = ?",
                (move.position, move.subscription, move.partition),
            )
        for h in tx.held:
            conn.execute(
                _UPSERT_HELD,
                (
                    h.subscription,
                    h.partition,
                    h.stream,
                    h.global_position,
                    h.message_id,
                    h.type,
                    h.status,
                    h.attempts,
                    h.error,
                    h.traceback,
                    _encoder.encode(h.history),
                    None if h.due_in is None else now + h.due_in,
                    h.first_failed_at,
                    h.last_failed_at,
                ),
            )
        for gone in tx.unheld:
            conn.execute(
                "DELETE FROM tidings_held WHERE subscription = ? AND global_position = ?",
                (gone.subscription, gone.global_position),
            )
        for o in tx.outcomes:
            conn.execute(
                "INSERT OR REPLACE INTO tidings_outcomes (message_id, type, status, result, reason, "
                "code, error, attempts, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    o.message_id,
                    o.type,
                    o.status,
                    o.result,
                    o.reason,
                    o.code,
                    o.error,
                    o.attempts,
                    now,
                ),
            )
        for doc in tx.documents:
            if doc.data is None:
                conn.execute(
                    "DELETE FROM tidings_documents WHERE collection = ? AND key = ?",
                    (doc.collection, doc.key),
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO tidings_documents (collection, key, data) VALUES (?,?,?)",
                    (doc.collection, doc.key, doc.data),
                )
        for item in tx.scheduled:
            m = item.message
            due = item.at if item.at is not None else now + (item.delay or 0.0)
            conn.execute(
                "INSERT OR IGNORE INTO tidings_scheduled (id, due_at, stream, kind, type, version, "
                "data, correlation_id, causation_id, headers) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    m.id,
                    due,
                    item.stream,
                    m.kind,
                    m.type,
                    m.version,
                    m.data,
                    m.correlation_id,
                    m.causation_id,
                    m.headers,
                ),
            )
        for message_id in tx.unscheduled:
            conn.execute("DELETE FROM tidings_scheduled WHERE id = ?", (message_id,))
        for entry in tx.audit:
            conn.execute(
                "INSERT INTO tidings_audit (at, actor, action, target, detail) VALUES (?,?,?,?,?)",
                (now, entry.actor, entry.action, entry.target, entry.detail),
            )

    def _known_ids(
        self,
        conn: sqlite3.Connection,
        ids: Sequence[str],
        stored: dict[str, int],
        local: dict[str, int],
    ) -> dict[str, int]:
        known = {i: stored[i] for i in ids if i in stored}
        known.update({i: local[i] for i in ids if i in local})
        rest = [i for i in ids if i not in known]
        for start in range(0, len(rest), _ID_CHUNK):
            chunk = rest[start : start + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = "SELECT id, global_position FROM tidings_log WHERE id IN (" + marks + ")"
            known.update(conn.execute(sql, chunk).fetchall())
        return known

    # --- the API ------------------------------------------------------------------------------

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # Reads share the one connection, on the loop's thread, outside any write transaction
        # (a group commit runs start to end without yielding).
        conn = self._conn
        if conn is None:
            raise StoreClosed()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc):
                raise StoreUnavailable(f"SQLite read failed on {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite read failed on {self.path!r}: {exc}") from exc
        rows: list[Any] = await self._retry_locked(lambda: conn.execute(sql, params).fetchall())
        return rows

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        lim = -1 if limit is None else limit
        if backwards:
            start = (1 << 62) if from_position is None else from_position
            rows = await self._read(
                "SELECT "
                + _COLUMNS
                + " FROM tidings_log WHERE stream = ? AND stream_position <= ? "
                "ORDER BY stream_position DESC LIMIT ?",
                (stream, start, lim),
            )
        else:
            start = 1 if from_position is None else from_position
            rows = await self._read(
                "SELECT "
                + _COLUMNS
                + " FROM tidings_log WHERE stream = ? AND stream_position >= ? "
                "ORDER BY stream_position LIMIT ?",
                (stream, start, lim),
            )
            if rows and (limit is None or len(rows) < limit):
                # A read to the end of the stream tells its version; the next commit can trust it
                # unless another process writes first, which clears it (see _apply_group).
                self._versions[stream] = rows[-1][5]
            elif not rows and start <= 1:
                self._versions[stream] = 0
        return [Envelope(*row) for row in rows]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if types is None:
            rows = await self._read(
                "SELECT " + _COLUMNS + " FROM tidings_log WHERE global_position > ? "
                "ORDER BY global_position LIMIT ?",
                (after, limit),
            )
        elif not types:
            return []
        else:
            marks = ",".join("?" * len(types))
            rows = await self._read(
                "SELECT " + _COLUMNS + " FROM tidings_log WHERE global_position > ? "
                "AND type IN (" + marks + ") ORDER BY global_position LIMIT ?",
                (after, *types, limit),
            )
        return [Envelope(*row) for row in rows]

    async def stream_version(self, stream: str) -> int:
        rows = await self._read(
            "SELECT coalesce(max(stream_position), 0) FROM tidings_log WHERE stream = ?", (stream,)
        )
        return int(rows[0][0])

    async def last_position(self) -> int:
        rows = await self._read("SELECT coalesce(max(global_position), 0) FROM tidings_log", ())
        return int(rows[0][0])

    async def streams(self, *, prefix: str = "", limit: int = 100) -> list[tuple[str, int]]:
        rows = await self._read(
            "SELECT stream, max(stream_position) FROM tidings_log WHERE substr(stream, 1, ?) = ? "
            "GROUP BY stream ORDER BY stream LIMIT ?",
            (len(prefix), prefix, limit),
        )
        return [(r[0], int(r[1])) for r in rows]

    # --- subscriptions ----------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` in a write transaction of its own (for rare writes outside group commit)."""
        conn = self._conn
        if conn is None:
            raise StoreClosed()

        def step() -> Any:
            self._begin(conn)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result

        return await self._retry_locked(step)

    async def now(self) -> float:
        rows = await self._read("SELECT " + _NOW, ())
        return float(rows[0][0])

    async def setup_subscription(self, name: str, partitions: int, position: int) -> None:
        def setup(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT partitions FROM tidings_partitions WHERE subscription = ? LIMIT 1", (name,)
            ).fetchone()
            if found is not None:
                if found[0] != partitions:
                    raise ConfigurationError(
                        f"subscription {name!r} has {found[0]} partitions, not {partitions}"
                    )
                return
            conn.executemany(
                "INSERT INTO tidings_partitions (subscription, partition, partitions, position) "
                "VALUES (?, ?, ?, ?)",
                [(name, n, partitions, position) for n in range(partitions)],
            )

        await self._write(setup)

    async def heartbeat(self, worker: str, ttl: float) -> int:
        def beat(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT OR REPLACE INTO tidings_workers (id, seen_at) VALUES (?, " + _NOW + ")",
                (worker,),
            )
            conn.execute(
                "DELETE FROM tidings_workers WHERE seen_at < " + _NOW + " - ?", (ttl * 10,)
            )
            return int(
                conn.execute(
                    "SELECT count(*) FROM tidings_workers WHERE seen_at >= " + _NOW + " - ?", (ttl,)
                ).fetchone()[0]
            )

        return int(await self._write(beat))

    async def claim(self, name: str, worker: str, want: int, ttl: float) -> dict[int, int]:
        def claim(conn: sqlite3.Connection) -> dict[int, int]:
            mine = [
                r[0]
                for r in conn.execute(
                    "SELECT partition FROM tidings_partitions WHERE subscription = ? AND owner = ? "
                    "ORDER BY partition",
                    (name, worker),
                )
            ]
            for n in mine[want:]:
                conn.execute(
                    "UPDATE tidings_partitions SET owner = NULL, lease_expires = NULL "
                    "WHERE subscription = ? AND partition = ?",
                    (name, n),
                )
            mine = mine[:want]
            if len(mine) < want:
                free = conn.execute(
                    "SELECT partition FROM tidings_partitions WHERE subscription = ? AND "
                    "(owner IS NULL OR lease_expires < " + _NOW + ") ORDER BY partition LIMIT ?",
                    (name, want - len(mine)),
                ).fetchall()
                mine.extend(r[0] for r in free)
            held = {}
            for n in mine:
                conn.execute(
                    "UPDATE tidings_partitions SET owner = ?, lease_expires = " + _NOW + " + ? "
                    "WHERE subscription = ? AND partition = ?",
                    (worker, ttl, name, n),
                )
                held[n] = conn.execute(
                    "SELECT position FROM tidings_partitions WHERE subscription = ? AND partition = ?",
                    (name, n),
                ).fetchone()[0]
            return held

        result: dict[int, int] = await self._write(claim)
        return result

    async def release(self, worker: str) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tidings_partitions SET owner = NULL, lease_expires = NULL WHERE owner = ?",
                (worker,),
            )
            conn.execute("DELETE FROM tidings_workers WHERE id = ?", (worker,))

        await self._write(release)

    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        rows = await self._read(
            "SELECT subscription, partition, partitions, position, owner, lease_expires "
            "FROM tidings_partitions WHERE ? IS NULL OR subscription = ? ORDER BY subscription, partition",
            (name, name),
        )
        return [PartitionInfo(*row) for row in rows]

    # --- held messages ----------------------------------------------------------------------------

    async def held(
        self,
        *,
        subscription: str | None = None,
        stream: str | None = None,
        status: str | None = None,
        id: int | None = None,
        limit: int = 1000,
    ) -> list[Held]:
        rows = await self._read(
            "SELECT " + _HELD_COLUMNS + " FROM tidings_held WHERE (? IS NULL OR subscription = ?) "
            "AND (? IS NULL OR stream = ?) AND (? IS NULL OR status = ?) AND (? IS NULL OR id = ?) "
            "ORDER BY subscription, global_position LIMIT ?",
            (subscription, subscription, stream, stream, status, status, id, id, limit),
        )
        return [held_from_row(row) for row in rows]

    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        if not partitions:
            return set()
        marks = ",".join("?" * len(partitions))
        rows = await self._read(
            "SELECT DISTINCT stream FROM tidings_held WHERE subscription = ? AND partition IN ("
            + marks
            + ")",
            (subscription, *partitions),
        )
        return {r[0] for r in rows}

    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        if not partitions:
            return []
        marks = ",".join("?" * len(partitions))
        head = (
            "AND h.global_position = (SELECT min(global_position) FROM tidings_held "
            "WHERE subscription = h.subscription AND stream = h.stream) "
            if sequenced
            else ""
        )
        # Only rows that are due can start a replay (a waiting row never does by itself: whoever
        # removes the row ahead of it marks it for replay), so the due-index finds the few
        # candidates, and only those are checked for being their stream's first held row.
        rows = await self._read(
            "SELECT h.stream, min(h.global_position) FROM tidings_held h WHERE h.subscription = ? "
            "AND (h.status = 'replay' OR (h.status = 'retrying' AND h.due_at <= " + _NOW + ")) "
            "AND h.partition IN (" + marks + ") " + head + "GROUP BY h.stream ORDER BY 2",
            (subscription, *partitions),
        )
        return [r[0] for r in rows]

    # --- outcomes, schedule, documents, audit -----------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        rows = await self._read(
            "SELECT message_id, type, status, result, reason, code, error, attempts, updated_at "
            "FROM tidings_outcomes WHERE message_id = ?",
            (message_id,),
        )
        return Outcome(*rows[0]) if rows else None

    async def release_due(self, limit: int = 500) -> int:
        rows = await self._read(
            "SELECT id, stream, kind, type, version, data, correlation_id, causation_id, headers "
            "FROM tidings_scheduled WHERE due_at <= " + _NOW + " ORDER BY due_at, id LIMIT ?",
            (limit,),
        )
        if not rows:
            return 0
        tx = Transaction(unscheduled=[row[0] for row in rows])
        for mid, stream, kind, type_, version, data, corr, cause, headers in rows:
            tx.appends.append(
                AppendOp(
                    stream, [NewMessage(mid, kind, type_, version, data, corr, cause, headers)], ANY
                )
            )
        await self.commit(tx)
        return len(rows)

    async def next_due(self) -> float | None:
        rows = await self._read("SELECT min(due_at) - " + _NOW + " FROM tidings_scheduled", ())
        return None if rows[0][0] is None else max(0.0, float(rows[0][0]))

    async def get_document(self, collection: str, key: str) -> bytes | None:
        rows = await self._read(
            "SELECT data FROM tidings_documents WHERE collection = ? AND key = ?", (collection, key)
        )
        return rows[0][0] if rows else None

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        rows = await self._read(
            "SELECT key, data FROM tidings_documents WHERE collection = ? ORDER BY key LIMIT ?",
            (collection, limit),
        )
        return [(r[0], r[1]) for r in rows]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        rows = await self._read(
            "SELECT actor, action, target, detail, at, id FROM tidings_audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditEntry(*row) for row in rows]


def _row(top: int, stream: str, version: int, m: NewMessage, now: float) -> tuple[Any, ...]:
    """The log row of ``m`` at global position ``top``, stream position ``version``."""
    return (top, stream, version, *astuple(m), now)


def _rows(
    top: int, stream: str, version: int, messages: Sequence[NewMessage]
) -> list[tuple[Any, ...]]:
    """The log rows of ``messages``, the first at global position ``top`` and stream position
    ``version``. (Not a comprehension in _append_alone, which would make its variables cells.)"""
    now = time_now()
    return [_row(top + n, stream, version + n, m, now) for n, m in enumerate(messages)]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
