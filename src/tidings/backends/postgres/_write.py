"""Writing one group of transactions to PostgreSQL, for the store's ``GroupCommitter``.

A group that only appends goes in as one statement in autocommit (``append``, or ``append_one``
for a lone message: lock the head row, number, insert, notify). Any other group, or one whose statement failed, takes the long way: one
database transaction of two round trips (read under the append lock, plan with ``plan_group``, then
write and COMMIT in one pipeline), retried while the server cannot be reached, and never applied
twice when its COMMIT was lost in flight (``_unknown``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from tidings.backends._plan import Head, Plan, Result, plan_group
from tidings.backends.postgres._retry import Retry
from tidings.backends.postgres._unknown import UnknownOutcome, committed
from tidings.errors import StoreError
from tidings.records import ANY, Appended, AppendOp, Transaction

log = logging.getLogger("tidings.postgres")
_Conn = psycopg.AsyncConnection[Any]
_Cursor = psycopg.AsyncCursor[Any]
_IDLE = psycopg.pq.TransactionStatus.IDLE
_encode = msgspec.json.Encoder().encode


class _Rejected(Exception):
    """A statement of the group failed for a reason in the data (one transaction's fault)."""


class GroupWriter:
    """Writes groups of transactions on connections of ``pool``; ``retrying(what)`` paces the
    tries of one operation while the server cannot be reached."""

    def __init__(
        self,
        pool: AsyncConnectionPool[_Conn],
        queries: dict[str, bytes],
        channel: str,
        retrying: Callable[[str], Retry],
    ) -> None:
        self._pool = pool
        self._q = queries
        self._channel = channel
        self._retrying = retrying
        self._kept: tuple[_Conn, _Cursor] | None = None

    async def close(self) -> None:
        """Give the connection kept for writing back to the pool."""
        kept, self._kept = self._kept, None
        if kept is not None:
            await self._pool.putconn(kept[0])

    @contextlib.asynccontextmanager
    async def _cursor(self, retry: Retry) -> AsyncIterator[_Cursor]:
        """A cursor on the connection groups are written on: one (groups are written one at a
        time), kept between groups; given back to the pool once it broke or was left inside a
        transaction."""
        if self._kept is None:
            conn = await self._pool.getconn(timeout=retry.connection_wait())
            self._kept = (conn, conn.cursor(binary=True))
        conn, cur = self._kept
        try:
            yield cur
        finally:
            if conn.broken or conn.info.transaction_status != _IDLE:
                self._kept = None
                await self._pool.putconn(conn)

    async def write(self, txs: list[Transaction]) -> list[Result]:
        """Commit ``txs`` together; each one's appends, or why it was refused, in order."""
        retry = self._retrying("commit")  # one deadline for the short way and the long way
        if _appends_only(txs):
            try:
                async with self._cursor(retry) as cur:
                    if len(txs) == 1 and len(txs[0].appends) == 1:
                        op = txs[0].appends[0]
                        if len(op.messages) == 1:
                            return await self._append_one(cur, op)
                    done = await self._append(cur, txs)
                if done is not None:
                    return done
            except psycopg.Error as exc:
                # An expected version that does not hold, an id stored already, a lost connection
                # (maybe after the server committed): the long way tells each transaction's result
                # and finds a group that did commit by its message ids.
                log.debug("PostgreSQL: one-statement append missed (%s)", exc)
        return await self._commit(txs, retry)

    async def _append_one(self, cur: _Cursor, op: AppendOp) -> list[Result]:
        """``_append`` of one message (a sequential caller's every commit), as parameters."""
        m = op.messages[0]
        params = {
            "stream": op.stream,
            "base": -1 if op.expected_version == ANY else op.expected_version,
            "id": m.id,
            "kind": m.kind,
            "type": m.type,
            "version": m.version,
            "data": m.data,
            "correlation_id": m.correlation_id,
            "causation_id": m.causation_id,
            "headers": m.headers,
            "channel": self._channel,
        }
        await cur.execute(self._q["append_one"], params, prepare=True)
        found = await cur.fetchone()
        assert found is not None
        top, version, _ = found
        return [([Appended(op.stream, version, top)], None)]

    async def _append(self, cur: _Cursor, txs: list[Transaction]) -> list[Result] | None:
        """Commit a group that only appends in one statement, numbering it as ``plan_group``
        would; None when its own expected versions depend on each other in a way only the long
        way checks. A stream not at its expected version makes the statement fail: nothing is
        written."""
        streams: dict[str, list[int]] = {}  # stream -> [base (-1: as it is), rows so far]
        rows: list[tuple[Any, ...]] = []
        for tx in txs:
            for op in tx.appends:
                stream, expected = str(op.stream), op.expected_version  # text, not a subclass
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
                            msgspec.Raw(m.data),  # stored JSON goes in as itself: no escaping
                            m.correlation_id,
                            m.causation_id,
                            None if m.headers is None else msgspec.Raw(m.headers),
                            known[0],
                            known[1],
                        )
                    )
        params = {"rows": _encode(rows), "count": len(rows), "channel": self._channel}
        await cur.execute(self._q["append"], params, prepare=True)
        found = await cur.fetchone()
        assert found is not None
        top, positions, _ = found
        results: list[Result] = []
        at = 0
        for tx in txs:
            done = []
            for op in tx.appends:
                at += len(op.messages)
                done.append(Appended(op.stream, positions[at - 1], top + at))
            results.append((done, None))
        return results

    async def _commit(self, txs: list[Transaction], retry: Retry) -> list[Result]:
        """The long way, tried again on another connection while the server cannot be reached
        (until ``retry`` gives up); a group a statement refuses is committed again one
        transaction at a time, so that only the culprit fails."""
        while True:
            cause: BaseException
            try:
                async with self._cursor(retry) as cur:
                    return await self._apply(cur.connection, txs)
            except UnknownOutcome as unknown:
                if await committed(self._pool, self._q, unknown, retry):
                    return unknown.results
                cause = unknown.__cause__ or unknown
            except _Rejected as rejected:
                if len(txs) > 1:
                    return [result for tx in txs for result in await self.write([tx])]
                return [(None, StoreError(f"PostgreSQL refused the commit: {rejected.__cause__}"))]
            except psycopg.OperationalError as exc:
                cause = exc
            await retry.pause(cause)

    async def _apply(self, conn: _Conn, txs: list[Transaction]) -> list[Result]:
        """Commit ``txs`` in one transaction on ``conn``: read under the append lock what the checks
        need, plan, write, COMMIT."""
        q = self._q
        streams = list(dict.fromkeys(op.stream for tx in txs for op in tx.appends))
        ids = list({m.id for tx in txs for op in tx.appends for m in op.messages})
        moved = sorted({(m.subscription, m.partition) for tx in txs for m in tx.checkpoints})
        documents = sorted({(d.collection, d.key) for tx in txs for d in tx.documents})
        pid = conn.info.backend_pid
        plan: Plan | None = None
        try:
            async with conn.pipeline():
                await conn.execute(b"BEGIN", prepare=False)
                # Writers of documents take the append lock too: the versions read below then
                # hold until this transaction commits.
                head_cur = await conn.execute(q["head_locked" if streams or documents else "head"])
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
                documents_cur = (
                    await conn.execute(
                        q["document_versions"],
                        ([c for c, _ in documents], [k for _, k in documents]),
                    )
                    if documents
                    else None
                )
            found = await head_cur.fetchone()
            assert found is not None
            xid, now, top = found
            head = Head(
                top,
                now,
                dict(await versions_cur.fetchall()) if versions_cur else {},
                dict(await ids_cur.fetchall()) if ids_cur else {},
                {(s, p): (o, pos) for s, p, o, pos in await parts_cur.fetchall()}
                if parts_cur
                else {},
                {(c, k): v for c, k, v in await documents_cur.fetchall()} if documents_cur else {},
            )
            plan = plan_group(txs, head)
            async with conn.pipeline():
                if plan.rows:
                    await conn.execute(q["move_head"], (plan.top,))
                    await conn.execute(q["insert_log"], (now, *plan.log_columns()))
                if plan.checkpoints:
                    await conn.cursor().executemany(q["move_checkpoint"], plan.checkpoint_rows())
                if plan.outcomes:
                    await conn.execute(q["upsert_outcomes"], (now, *plan.outcome_columns()))
                if plan.documents:
                    await conn.cursor().executemany(q["put_document"], plan.document_rows())
                for name, params in plan.statements:
                    await conn.cursor().executemany(q[name], params)
                if plan.rows:
                    await conn.execute(q["notify"], (self._channel, str(plan.top)))
                await conn.execute(b"COMMIT", prepare=False)
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


def _appends_only(txs: list[Transaction]) -> bool:
    """Whether every transaction of the group only appends (each append with messages)."""
    return all(
        tx.appends and not tx.beyond_appends() and all(op.messages for op in tx.appends)
        for tx in txs
    )


async def _rollback(conn: _Conn) -> None:
    if conn.broken or conn.closed:
        return
    with contextlib.suppress(psycopg.Error):
        await conn.execute(b"ROLLBACK", prepare=False)
