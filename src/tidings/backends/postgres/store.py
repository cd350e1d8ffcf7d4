"""The PostgreSQL store: for production, and for many workers on many machines.

**No committed message is ever skipped by a reader.** A transaction that appends to the log locks
the one row of the ``head`` table (the log's top: the *append lock*, one per schema), assigns
global positions ``top + 1, top + 2, …`` and keeps the lock until it commits. PostgreSQL releases a
transaction's locks only after its commit is visible, and hands a waiter the row as it was
committed, so the next appender numbers on from a top that includes it: positions have no gaps, and
a snapshot that shows position ``n`` shows every position below it. ``read_all(after=checkpoint)``
is therefore always a prefix of what will ever be there; docs/concepts.md ("Ordering on
PostgreSQL") has the argument and its cost.

**Group commit.** ``commit()`` queues the transaction; one flusher task per store commits
everything queued as one group, on a connection it keeps (a lone caller, whom nobody could join,
commits its own group in its own task). A group that only appends is one statement in autocommit
(``append_one`` for one message, else ``append_new``, ``append_known`` or ``append_rows``, by
what is known of the streams: lock the head row, number, insert, notify): one round trip, of a
statement prepared on the connection and run through libpq itself (``_lean``), since psycopg's
cursor costs the client more than the server's work outside the disk sync. Any
other group — or one whose one-statement append fails: an expected version that does not hold, a
message id stored already, a lost connection — takes the long way: one database transaction of
two round trips (the checks under the lock, then the writes and ``COMMIT``). There a
transaction whose check fails (expected version, fenced checkpoint) is refused alone; a group in
which a statement fails (a row breaking a constraint) is committed again one transaction at a
time, so that only the culprit fails.

**Connection loss.** A group that fails before its ``COMMIT`` is sent is retried on another
connection (the pool replaces broken ones) with backoff, up to ``retry_timeout``. If the connection
is lost while the ``COMMIT`` may be in flight, the store asks the server whether the group's
transaction id committed (``pg_xact_status``), ending the old session first if it is still open,
and either reports the group's results or commits it again: a group is never applied twice. A
one-statement append lost in flight needs no such question: the long way that follows waits for
the head row, then finds the group's message ids stored (it committed) or not (it did not).

**Wake-ups.** Every commit that appends sends ``NOTIFY`` with the new last global position;
:meth:`PostgresStore.wait_for_change` returns when one arrives (from any process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from tidings.backends._plan import Head, Plan, Result, plan_group
from tidings.backends._shared import held_from_row, others_ready, settle
from tidings.backends.postgres import _lean, _sql
from tidings.backends.postgres._listen import Listener
from tidings.backends.postgres._unknown import UnknownOutcome, committed
from tidings.errors import (
    ConfigurationError,
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
    ChangeFeed,
    Held,
    Outcome,
    PartitionInfo,
    Store,
    Transaction,
)

log = logging.getLogger("tidings.postgres")
T = TypeVar("T")
_Conn = psycopg.AsyncConnection[Any]
_Pending = tuple[Transaction, "asyncio.Future[list[Appended]]"]
_json_encoder = msgspec.json.Encoder()
_IDLE = psycopg.pq.TransactionStatus.IDLE

#: append_one's parameters, in the order the store encodes them (checked when a store is made).
_ONE = (
    "stream",
    "base",
    "id",
    "kind",
    "type",
    "version",
    "data",
    "correlation_id",
    "causation_id",
    "headers",
    "channel",
)
_INT8 = struct.Struct(">q").pack
_INT4 = struct.Struct(">i").pack

#: The most transactions one group commit takes.
_GROUP_LIMIT = 512
#: First key of the migration lock (the second is the schema's hash).
_MIGRATE_LOCK = 7_461_002
#: Connection defaults, unless the URL says otherwise: a dead server or network is noticed within
#: about a minute instead of the operating system's two hours; no JIT compilation, which costs
#: a short statement hundreds of milliseconds whenever the planner's estimates run high.
_CONNECTION_DEFAULTS = {
    "application_name": "tidings",
    "options": "-c jit=off",
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


class _Rejected(Exception):
    """A statement of the group failed for a reason in the data (one transaction's fault)."""


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class PostgresStore(Store, ChangeFeed):
    """A store in a PostgreSQL schema. ``App(store="postgresql://user@host/db?schema=shop")`` or
    ``PostgresStore(url, schema="shop")``.

    ``url`` is a libpq connection URL or string. ``min_connections``/``max_connections`` size the
    pool; ``retry_timeout`` is how long an operation keeps retrying while the server is
    unreachable before it raises ``StoreUnavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "tidings",
        min_connections: int = 1,
        max_connections: int = 8,
        retry_timeout: float = 30.0,
    ) -> None:
        self.schema = _sql.validate_schema(schema)
        if not 1 <= min_connections <= max_connections:
            raise ConfigurationError("PostgresStore: 1 <= min_connections <= max_connections")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"not a PostgreSQL connection URL: {exc}") from exc
        for option, value in _CONNECTION_DEFAULTS.items():
            params.setdefault(option, value)
        # Text goes to the server as UTF-8 (the one-statement appends send it as it is).
        params["client_encoding"] = "UTF8"
        self._conninfo = make_conninfo("", **params)
        self._where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        self.url = url
        self._min = min_connections
        self._max = max_connections
        self._retry_timeout = float(retry_timeout)
        self._q = _sql.queries(schema)
        self._lean = {
            name: _lean.Statement(name, self._q[name])
            for name in ("append_one", "append_new", "append_known", "append_rows", "stream_state")
        }
        if self._lean["append_one"].names != list(_ONE):
            raise AssertionError(f"append_one's parameters are not in the order {_ONE}")
        key = _signed32(zlib.crc32(schema.encode()))
        self._migrate_lock = (_MIGRATE_LOCK, key)
        self._channel = f"tidings_{schema}"[:63]
        self._channel_bytes = self._channel.encode()
        self._pool: AsyncConnectionPool[_Conn] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        #: set while a caller commits its own group in its own task (see commit())
        self._inline: asyncio.Future[None] | None = None
        self._writer: _Conn | None = None
        self._closed = True
        self._listener = Listener(self._conninfo, self._channel)
        #: Test hook: awaited inside a group's transaction, after its writes, before its COMMIT
        #: (with the append lock held). Raising rolls the group back.
        self._before_commit: Callable[[], Awaitable[None]] | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if not self._closed:
            return
        self._loop = asyncio.get_running_loop()
        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            self._conninfo,
            min_size=self._min,
            max_size=self._max,
            kwargs={"autocommit": True},
            open=False,
            timeout=self._retry_timeout,
            name=f"tidings-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=self._retry_timeout)
            self._pool = pool
            await self._run("apply migrations", self._migrate)
        except BaseException as exc:
            self._pool = None
            await pool.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailable(
                    f"cannot connect to PostgreSQL at {self._where}: {exc}"
                ) from exc
            raise
        self._listener = Listener(self._conninfo, self._channel)
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let the groups in flight finish (each retries for at most retry_timeout): a caller's
        # own first, as its end may start the flusher for those who queued meanwhile.
        if self._inline is not None:
            await asyncio.wait([self._inline], timeout=self._retry_timeout)
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=self._retry_timeout)
        for _, fut in self._pending:
            settle(fut, None, StoreClosed())
        self._pending.clear()
        await self._listener.close()
        if self._writer is not None and self._pool is not None:
            _lean.release(self._writer)
            await self._pool.putconn(self._writer)
        self._writer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _migrate(self, conn: _Conn) -> None:
        q = self._q
        async with conn.transaction():
            # Under a lock of the schema's own, so that processes opening it at once apply each
            # migration once (CREATE SCHEMA IF NOT EXISTS alone is not safe against a race).
            await conn.execute(q["migrate_lock"], self._migrate_lock)
            await conn.execute(q["create_schema"])
            await conn.execute(q["create_migrations"])
            cur = await conn.execute(q["applied_migrations"])
            applied = {row[0] for row in await cur.fetchall()}
            for version, name, script in _sql.migrations(self.schema):
                if version not in applied:
                    await conn.execute(script)
                    await conn.execute(q["record_migration"], (version, name))

    def _live_pool(self) -> AsyncConnectionPool[_Conn]:
        if self._closed or self._pool is None:
            raise StoreClosed()
        return self._pool

    async def _run(self, what: str, step: Callable[[_Conn], Awaitable[T]]) -> T:
        """Run ``step`` on a pooled connection; retry it on another while the server cannot be
        reached (every caller's step is safe to run again), translate driver errors."""
        pool = self._pool
        if pool is None:
            raise StoreClosed()
        deadline = time.monotonic() + self._retry_timeout
        delay = 0.02
        while True:
            try:
                async with pool.connection() as conn:
                    return await step(conn)
            except psycopg.OperationalError as exc:
                if self._pool is None:
                    raise StoreClosed() from exc
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(
                        f"PostgreSQL at {self._where}: cannot {what}: {exc}"
                    ) from exc
                log.info("PostgreSQL: %s failed (%s); retrying", what, exc)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL refused to {what}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _rows(self, name: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._live_pool()
        query = self._q[name]

        async def fetch(conn: _Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await self._run(f"read ({name})", fetch)

    # --- writing: group commit ----------------------------------------------------------------

    async def commit(self, tx: Transaction) -> list[Appended]:
        if self._closed:
            raise StoreClosed()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError(
                "this PostgreSQL store was opened in another event loop; open one App per event loop"
            )
        if self._flusher is None and self._inline is None and not others_ready(loop):
            # Nobody is committing and nobody else could join a group before it went out (a
            # sequential caller's case): commit in this task, without a hand-off to the flusher.
            # Whoever arrives meanwhile queues for the flusher, started when this one is done.
            self._inline = done = loop.create_future()
            try:
                ((result, error),) = await self._commit_group([tx])
            finally:
                self._inline = None
                done.set_result(None)
                if self._pending and self._flusher is None:
                    self._flusher = loop.create_task(self._flush(), name="tidings:postgres-commit")
            if error is not None:
                raise error
            assert result is not None
            return result
        fut: asyncio.Future[list[Appended]] = loop.create_future()
        self._pending.append((tx, fut))
        if self._flusher is None and self._inline is None:
            # The flusher starts on the loop's next iteration: every caller that reaches
            # commit() meanwhile, and while a group is in flight, joins the next group.
            self._flusher = loop.create_task(self._flush(), name="tidings:postgres-commit")
        return await fut

    async def _flush(self) -> None:
        try:
            while self._pending:
                group = self._pending[:_GROUP_LIMIT]
                del self._pending[:_GROUP_LIMIT]
                try:
                    results = await self._commit_group([tx for tx, _ in group])
                except Exception as exc:
                    results = [(None, exc)] * len(group)
                for (_, fut), (result, error) in zip(group, results, strict=True):
                    settle(fut, result, error)
        finally:
            self._flusher = None

    @contextlib.asynccontextmanager
    async def _writing(self, pool: AsyncConnectionPool[_Conn]) -> AsyncIterator[_Conn]:
        """The connection group commits go through: one (commits are serial), kept between
        groups instead of taken from the pool each time; given back when it broke or was left
        inside a transaction, and replaced on the next group."""
        conn = self._writer or await self._take_writer(pool)
        try:
            yield conn
        finally:
            if conn.broken or conn.pgconn.transaction_status != _IDLE:
                await self._give_back(conn, pool)

    async def _take_writer(self, pool: AsyncConnectionPool[_Conn]) -> _Conn:
        conn = self._writer = await pool.getconn()
        return conn

    async def _give_back(self, conn: _Conn, pool: AsyncConnectionPool[_Conn]) -> None:
        self._writer = None
        _lean.release(conn)
        await pool.putconn(conn)

    async def _commit_group(self, txs: list[Transaction]) -> list[Result]:
        pool = self._pool
        if pool is None:
            raise StoreClosed()
        if self._before_commit is None and _appends_only(txs):
            try:
                # _writing() written out: this is every sequential commit's path.
                conn = self._writer or await self._take_writer(pool)
                try:
                    done = await self._append_group(conn, txs)
                finally:
                    # (a closed connection's status is UNKNOWN: given back too)
                    if conn.broken or conn.pgconn.transaction_status != _IDLE:
                        await self._give_back(conn, pool)
                if done is not None:
                    return done
            except psycopg.Error as exc:
                # A check failed, an id is stored already, or the connection was lost (maybe
                # after the server committed): the long way below tells each transaction's
                # result, and finds a group that did commit by its message ids.
                log.debug("PostgreSQL: one-round-trip append missed (%s)", exc)
        deadline = time.monotonic() + self._retry_timeout
        delay = 0.02
        while True:
            cause: BaseException
            try:
                async with self._writing(pool) as conn:
                    return await self._apply_group(conn, txs)
            except UnknownOutcome as unknown:
                if await committed(pool, self._q, unknown, deadline, self._where):
                    return unknown.results
                cause = unknown.__cause__ or unknown
            except _Rejected as rejected:
                if len(txs) > 1:
                    return [result for tx in txs for result in await self._commit_group([tx])]
                return [(None, StoreError(f"PostgreSQL refused the commit: {rejected.__cause__}"))]
            except psycopg.OperationalError as exc:
                cause = exc
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"PostgreSQL at {self._where}: cannot commit: {cause}"
                ) from cause
            log.info("PostgreSQL: commit failed (%s); retrying", cause)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _append_one(self, conn: _Conn, op: AppendOp) -> list[Result] | None:
        """Commit a group of one message (a sequential caller's every commit) with ``append_one``,
        its parameters encoded here in the statement's order (see ``_ONE``). When the stream is
        not at the version expected, nothing is written, and one read (``stream_state``) tells
        the version to refuse with, rather than the long way's locking transaction; None when
        the long way must tell (the message is stored already)."""
        m = op.messages[0]
        expected = op.expected_version
        base = -1 if expected == ANY else expected
        correlation, causation = m.correlation_id, m.causation_id
        stream, message_id = op.stream.encode(), m.id.encode()
        try:
            found = await self._send_append(
                conn,
                "append_one",
                [
                    stream,
                    _INT8(base),
                    message_id,
                    m.kind.encode(),
                    m.type.encode(),
                    _INT4(m.version),
                    m.data,
                    None if correlation is None else correlation.encode(),
                    None if causation is None else causation.encode(),
                    m.headers,
                    self._channel_bytes,
                ],
            )
        except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation) as exc:
            # A position stored already (the stream moved on) or none at all (the stream is
            # behind). A stored id, or anything else, is the long way's to tell, and so is an
            # append at any version: its position collided with a writer that committed after
            # this statement's snapshot, which is a race to retry, not a refusal.
            diag = exc.diag
            if base < 0 or (
                diag.constraint_name != "log_stream_position"
                and diag.column_name != "stream_position"
            ):
                raise
            state = await _lean.fetch_row(conn, self._lean["stream_state"], [stream, message_id])
            if state[1] == b"t":
                return None  # the message is stored already: the long way tells where
            version = _int(state[0])
            if version == base:
                raise  # it caught up meanwhile (another writer): the long way decides
            return [(None, WrongExpectedVersion(op.stream, base, version))]
        return [([Appended(op.stream, _int(found[2]), _int(found[0]) + 1)], None)]

    async def _append_group(self, conn: _Conn, txs: list[Transaction]) -> list[Result] | None:
        """Commit a group that only appends in one statement (``append_one`` for one message;
        else ``append_new``, ``append_known`` or ``append_rows``, by what is known of the streams;
        autocommit), or return None when the group's own appends depend on each other in a way
        only the long way checks. The statement numbers the rows as :func:`plan_group` would, or
        fails."""
        if len(txs) == 1:
            appends = txs[0].appends
            if len(appends) == 1 and len(appends[0].messages) == 1:
                return await self._append_one(conn, appends[0])
        streams: dict[str, list[int]] = {}  # stream -> [base (-1: as it is), rows so far]
        rows: list[tuple[Any, ...]] = []
        for tx in txs:
            for op in tx.appends:
                stream, expected = op.stream, op.expected_version
                known = streams.get(stream)
                if known is None:
                    known = streams[stream] = [-1 if expected == ANY else expected, 0]
                elif expected != ANY and (known[0] < 0 or expected != known[0] + known[1]):
                    return None
                for m in op.messages:
                    known[1] += 1
                    rows.append(
                        (
                            stream,
                            m.id,
                            m.kind,
                            m.type,
                            m.version,
                            # The stored JSON goes in as itself, not as a string: no escaping.
                            msgspec.Raw(m.data),
                            m.correlation_id,
                            m.causation_id,
                            None if m.headers is None else msgspec.Raw(m.headers),
                            known[0],
                            known[1],
                        )
                    )
        bases = [known[0] for known in streams.values()]
        query = (
            "append_new" if not any(bases) else "append_known" if min(bases) >= 0 else "append_rows"
        )
        statement = self._lean[query]
        found = await self._send_append(
            conn,
            query,
            statement.values(
                {
                    "rows": _json_encoder.encode(rows),
                    "count": len(rows),
                    "channel": self._channel,
                }
            ),
        )
        top = _int(found[0])
        # The stream positions: as numbered here, or (any version) as the statement found them.
        positions = (
            _int_array(found[2]) if query == "append_rows" else [row[9] + row[10] for row in rows]
        )
        results: list[Result] = []
        at = 0
        for tx in txs:
            done = []
            for op in tx.appends:
                at += len(op.messages)
                done.append(Appended(op.stream, positions[at - 1], top + at))
            results.append((done, None))
        return results

    async def _send_append(
        self, conn: _Conn, query: str, values: list[bytes | None]
    ) -> tuple[bytes | None, ...]:
        # A method of its own so that tests can lose the connection around it.
        return await _lean.fetch_row(conn, self._lean[query], values)

    async def _apply_group(self, conn: _Conn, txs: list[Transaction]) -> list[Result]:
        """Commit ``txs`` in one transaction on ``conn``: read under the append lock what the checks
        need, plan, write, COMMIT: two round trips."""
        q = self._q
        streams = list(dict.fromkeys(op.stream for tx in txs for op in tx.appends))
        ids = list({m.id for tx in txs for op in tx.appends for m in op.messages})
        moved = sorted({(m.subscription, m.partition) for tx in txs for m in tx.checkpoints})
        pid = conn.info.backend_pid
        plan: Plan | None = None
        try:
            # The reads are synchronised when the pipeline ends (an error is raised there).
            async with conn.pipeline():
                await conn.execute(b"BEGIN")
                head_cur = await conn.execute(q["head_locked" if streams else "head"])
                versions_cur = (
                    await conn.execute(q["stream_versions"], (streams,)) if streams else None
                )
                ids_cur = await conn.execute(q["known_ids"], (ids,)) if ids else None
                parts_cur = (
                    await conn.execute(
                        q["lock_partitions"], ([s for s, _ in moved], [p for _, p in moved])
                    )
                    if moved
                    else None
                )
            found = await head_cur.fetchone()
            assert found is not None
            xid, now, top = found
            head = Head(
                top,
                now,
                {s: v for s, v in await versions_cur.fetchall()} if versions_cur else {},
                {i: g for i, g in await ids_cur.fetchall()} if ids_cur else {},
                {(s, p): (o, pos) for s, p, o, pos in await parts_cur.fetchall()}
                if parts_cur
                else {},
            )
            plan = plan_group(txs, head)
            async with conn.pipeline() as pipe:
                if plan.rows:
                    await conn.execute(q["move_head"], (plan.top,))
                    await conn.execute(q["insert_log"], (now, *plan.log_columns()))
                if plan.checkpoints:
                    await conn.cursor().executemany(q["move_checkpoint"], plan.checkpoint_rows())
                if plan.outcomes:
                    await conn.execute(q["upsert_outcomes"], (now, *plan.outcome_columns()))
                for name, params in plan.statements:
                    await conn.cursor().executemany(q[name], params)
                if plan.rows:
                    await conn.execute(q["notify"], (self._channel, str(plan.top)))
                if self._before_commit is not None:
                    await pipe.sync()
                    await self._before_commit()
                await self._send_commit(conn)
        except psycopg.OperationalError as exc:
            if conn.broken or conn.closed:
                if plan is not None:
                    raise UnknownOutcome(xid, pid, plan.results) from exc
                raise
            await _rollback(conn)
            raise
        except psycopg.Error as exc:
            await _rollback(conn)
            raise _Rejected() from exc
        except BaseException:
            await _rollback(conn)
            raise
        return plan.results

    async def _send_commit(self, conn: _Conn) -> None:
        # A method of its own so that tests can lose the connection around it.
        await conn.execute(b"COMMIT")

    # --- wake-ups -----------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Wait until the log may have grown, or ``timeout`` seconds.

        Returns early when a commit that appended (in any process) is notified through
        LISTEN/NOTIFY, or when the listening connection was (re)established (notifications may
        have been missed meanwhile). Never raises on timeout; polling stays the safety net.
        """
        self._live_pool()
        await self._listener.wait(timeout)

    # --- the log ------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        if backwards:
            start = (1 << 62) if from_position is None else from_position
            rows = await self._rows("read_backwards", (stream, start, limit))
        else:
            start = 1 if from_position is None else from_position
            rows = await self._rows("read_forwards", (stream, start, limit))
        return [Envelope(*row) for row in rows]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if types is None:
            rows = await self._rows("read_all", (after, limit))
        elif not types:
            return []
        else:
            rows = await self._rows("read_all_types", (after, list(types), limit))
        return [Envelope(*row) for row in rows]

    async def stream_version(self, stream: str) -> int:
        return int((await self._rows("stream_version", (stream,)))[0][0])

    async def last_position(self) -> int:
        return int((await self._rows("last_position"))[0][0])

    async def streams(self, *, prefix: str = "", limit: int = 100) -> list[tuple[str, int]]:
        return [(s, int(v)) for s, v in await self._rows("streams", (prefix, limit))]

    # --- subscriptions ------------------------------------------------------------------------

    async def now(self) -> float:
        return float((await self._rows("now"))[0][0])

    async def setup_subscription(self, name: str, partitions: int, position: int) -> None:
        q = self._q

        async def setup(conn: _Conn) -> None:
            async with conn.transaction():
                await conn.execute(q["create_partitions"], (name, partitions, position, partitions))
                cur = await conn.execute(q["subscription_size"], (name,))
                found = await cur.fetchone()
            if found is not None and found[0] != partitions:
                raise ConfigurationError(
                    f"subscription {name!r} has {found[0]} partitions, not {partitions}"
                )

        self._live_pool()
        await self._run("set up a subscription", setup)

    async def heartbeat(self, worker: str, ttl: float) -> int:
        q = self._q

        async def beat(conn: _Conn) -> int:
            async with conn.transaction():
                await conn.execute(q["heartbeat"], (worker,))
                await conn.execute(q["forget_workers"], (ttl * 10,))
                cur = await conn.execute(q["count_workers"], (ttl,))
                found = await cur.fetchone()
            assert found is not None
            return int(found[0])

        self._live_pool()
        return await self._run("record a heartbeat", beat)

    async def claim(self, name: str, worker: str, want: int, ttl: float) -> dict[int, int]:
        q = self._q

        async def claim(conn: _Conn) -> dict[int, int]:
            async with conn.transaction():
                cur = await conn.execute(q["lock_subscription"], (name,))
                rows = await cur.fetchall()
                mine = [n for n, owner, _ in rows if owner == worker]
                surplus, mine = mine[want:], mine[:want]
                if surplus:
                    await conn.execute(q["free_partitions"], (name, surplus))
                if len(mine) < want:
                    free = [n for n, owner, expired in rows if expired and owner != worker]
                    mine.extend(free[: want - len(mine)])
                if not mine:
                    return {}
                cur = await conn.execute(q["lease_partitions"], (worker, ttl, name, mine))
                return {n: position for n, position in await cur.fetchall()}

        self._live_pool()
        return await self._run("claim partitions", claim)

    async def release(self, worker: str) -> None:
        q = self._q

        async def release(conn: _Conn) -> None:
            async with conn.transaction():
                await conn.execute(q["release_leases"], (worker,))
                await conn.execute(q["forget_worker"], (worker,))

        self._live_pool()
        await self._run("release leases", release)

    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        return [PartitionInfo(*row) for row in await self._rows("partitions", (name, name))]

    # --- held messages ------------------------------------------------------------------------

    async def held(
        self,
        *,
        subscription: str | None = None,
        stream: str | None = None,
        status: str | None = None,
        id: int | None = None,
        limit: int = 1000,
    ) -> list[Held]:
        rows = await self._rows(
            "held",
            (subscription, subscription, stream, stream, status, status, id, id, limit),
        )
        return [held_from_row(row) for row in rows]

    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        if not partitions:
            return set()
        rows = await self._rows("held_streams", (subscription, list(partitions)))
        return {r[0] for r in rows}

    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        if not partitions:
            return []
        name = "due_streams_sequenced" if sequenced else "due_streams"
        return [r[0] for r in await self._rows(name, (subscription, list(partitions)))]

    # --- outcomes, schedule, documents, audit -------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        rows = await self._rows("outcome", (message_id,))
        return Outcome(*rows[0]) if rows else None

    async def release_due(self, limit: int = 500) -> int:
        rows = await self._rows("due_scheduled", (limit,))
        if not rows:
            return 0
        tx = Transaction(unscheduled=[row[0] for row in rows])
        for mid, stream, kind, type_, version, data, corr, cause, headers in rows:
            message = NewMessage(mid, kind, type_, version, data, corr, cause, headers)
            tx.appends.append(AppendOp(stream, [message], ANY))
        # Two workers releasing the same rows at once append each message once: its id is known.
        await self.commit(tx)
        return len(rows)

    async def next_due(self) -> float | None:
        found = (await self._rows("next_due"))[0][0]
        return None if found is None else max(0.0, float(found))

    async def get_document(self, collection: str, key: str) -> bytes | None:
        rows = await self._rows("get_document", (collection, key))
        return rows[0][0] if rows else None

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        return [(k, d) for k, d in await self._rows("documents", (collection, limit))]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        return [AuditEntry(*row) for row in await self._rows("audit_entries", (limit,))]


def _appends_only(txs: list[Transaction]) -> bool:
    """Whether every transaction of the group only appends (each append with messages)."""
    for tx in txs:
        if not tx.appends or tx.beyond_appends():
            return False
        for op in tx.appends:
            if not op.messages:
                return False
    return True


def _int(text: bytes | None) -> int:
    """A bigint in PostgreSQL's text format."""
    assert text is not None
    return int(text)


def _int_array(text: bytes | None) -> list[int]:
    """A bigint[] in PostgreSQL's text format (``{1,2,3}``)."""
    assert text is not None
    return [int(part) for part in text[1:-1].split(b",")]


async def _rollback(conn: _Conn) -> None:
    if conn.broken or conn.closed:
        return
    with contextlib.suppress(psycopg.Error):
        await conn.execute(b"ROLLBACK")
