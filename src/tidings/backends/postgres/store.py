"""The PostgreSQL store: the log, its reads and the state of delivery, over one ``Database``.

Commits are group-committed (``GroupCommitter``) and written by ``_write.GroupWriter``; every
commit that appends notifies the store's channel, which :meth:`PostgresStore.wait_for_change`
listens on (``_listen``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.backends._group import GroupCommitter
from tidings.backends._shared import held_from_row, release
from tidings.backends.postgres._database import Conn, Database
from tidings.backends.postgres._listen import Listener
from tidings.backends.postgres._write import GroupWriter
from tidings.errors import (
    ConfigurationError,
    StoreClosed,
    SubscriptionInUse,
    SubscriptionNotFound,
)
from tidings.messages import Envelope
from tidings.records import (
    Appended,
    AuditEntry,
    Backlog,
    Document,
    Held,
    Outcome,
    PartitionInfo,
    Transaction,
    TypeActivity,
    TypeCount,
)
from tidings.store import ChangeFeed, Store


class PostgresStore(Store, ChangeFeed):
    """A store in a PostgreSQL schema. ``App(store="postgresql://user@host/db?schema=shop")`` or
    ``PostgresStore(url, schema="shop")``.

    ``url`` is a libpq connection URL or string. ``min_connections``/``max_connections`` size the
    pool; ``retry_timeout`` (also an attribute, which may be changed) is how long an operation
    keeps retrying in all while the server is unreachable before it raises ``StoreUnavailable``;
    the server is tried again at least every half second, so work resumes within about a second
    of it accepting connections again.
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
        self._db = Database(
            url,
            schema,
            min_connections=min_connections,
            max_connections=max_connections,
            retry_timeout=retry_timeout,
        )
        self.schema = schema
        self.url = url
        self._channel = f"tidings_{schema}"[:63]
        self._group: GroupCommitter | None = None
        self._writer: GroupWriter | None = None
        self._listener = Listener(self._db.conninfo, self._channel)

    @property
    def retry_timeout(self) -> float:
        return self._db.retry_timeout

    @retry_timeout.setter
    def retry_timeout(self, seconds: float) -> None:
        self._db.retry_timeout = float(seconds)

    # --- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._group is not None:
            return
        pool = await self._db.open()
        self._writer = GroupWriter(pool, self._db.q, self._channel, self._db.retrying)
        self._group = GroupCommitter(self._writer.write)
        self._listener = Listener(self._db.conninfo, self._channel)

    async def close(self) -> None:
        group = self._group
        if group is None:
            return
        writer, self._group, self._writer = self._writer, None, None
        await group.close()  # the group being written finishes, retrying for retry_timeout
        if writer is not None:
            await writer.close()
        await self._listener.close()
        await self._db.close()

    # --- writing ------------------------------------------------------------------------------

    async def commit(self, tx: Transaction) -> list[Appended]:
        group = self._group
        if group is None:
            raise StoreClosed()
        return await group.commit(tx)

    # --- wake-ups -----------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Wait until the log may have grown, or ``timeout`` seconds.

        Returns early when a commit that appended (in any process) is notified through
        LISTEN/NOTIFY, or when the listening connection was (re)established (notifications may
        have been missed meanwhile). Never raises on timeout; polling stays the safety net.
        """
        if self._group is None:
            raise StoreClosed()
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
            rows = await self._db.rows("read_backwards", (stream, start, limit))
        else:
            start = 1 if from_position is None else from_position
            rows = await self._db.rows("read_forwards", (stream, start, limit))
        return [Envelope(*row) for row in rows]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if types is None:
            rows = await self._db.rows("read_all", (after, limit))
        elif not types:
            return []
        else:
            rows = await self._db.rows("read_all_types", (after, list(types), limit))
        return [Envelope(*row) for row in rows]

    async def find(
        self,
        *,
        ids: Sequence[str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if ids is not None:
            rows = await self._db.rows("find_ids", (list(ids), limit))
        elif correlation_id is not None:
            rows = await self._db.rows("find_correlated", (correlation_id, limit))
        elif causation_id is not None:
            rows = await self._db.rows("find_caused", (causation_id, limit))
        else:
            return []
        return [Envelope(*row) for row in rows]

    async def stream_version(self, stream: str) -> int:
        return int((await self._db.rows("stream_version", (stream,)))[0][0])

    async def last_position(self) -> int:
        return int((await self._db.rows("last_position"))[0][0])

    async def streams(
        self, *, prefix: str = "", limit: int = 100, internal: bool = False
    ) -> list[tuple[str, int]]:
        rows = await self._db.rows("streams", (prefix, prefix, internal, limit))
        return [(s, int(v)) for s, v in rows]

    async def type_counts(self) -> list[TypeCount]:
        return [TypeCount(*row) for row in await self._db.rows("type_counts")]

    async def arrivals(self) -> list[TypeActivity]:
        return [TypeActivity(*row) for row in await self._db.rows("arrivals")]

    async def backlog(self, types: Sequence[str], bounds: Sequence[int]) -> list[Backlog]:
        if not types or not bounds:
            return []
        params = (list(bounds), min(bounds), list(types))
        return [Backlog(*row) for row in await self._db.rows("backlog", params)]

    # --- subscriptions ------------------------------------------------------------------------

    async def now(self) -> float:
        return float((await self._db.rows("now"))[0][0])

    async def setup_subscription(self, name: str, partitions: int, position: int) -> None:
        q = self._db.q

        async def setup(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(q["create_partitions"], (name, partitions, position, partitions))
                cur = await conn.execute(q["subscription_size"], (name,))
                found = await cur.fetchone()
            if found is not None and found[0] != partitions:
                raise ConfigurationError(
                    f"subscription {name!r} has {found[0]} partitions, not {partitions}"
                )

        await self._db.run("set up a subscription", setup)

    async def heartbeat(self, worker: str, ttl: float) -> int:
        q = self._db.q

        async def beat(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute(q["heartbeat"], (worker,))
                await conn.execute(q["forget_workers"], (ttl * 10,))
                cur = await conn.execute(q["count_workers"], (ttl,))
                found = await cur.fetchone()
            assert found is not None
            return int(found[0])

        return await self._db.run("record a heartbeat", beat)

    async def claim(self, name: str, worker: str, want: int, ttl: float) -> dict[int, int]:
        q = self._db.q

        async def claim(conn: Conn) -> dict[int, int]:
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

        return await self._db.run("claim partitions", claim)

    async def release(self, worker: str) -> None:
        q = self._db.q

        async def release(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(q["release_leases"], (worker,))
                await conn.execute(q["forget_worker"], (worker,))

        await self._db.run("release leases", release)

    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        return [PartitionInfo(*row) for row in await self._db.rows("partitions", (name, name))]

    async def _operate(
        self,
        what: str,
        name: str,
        audit: AuditEntry,
        force: bool,
        writes: Sequence[tuple[str, tuple[Any, ...]]],
    ) -> None:
        """Check that an operator may act on the subscription now (its partitions locked), then
        run ``writes`` and write ``audit``, in one transaction."""
        q = self._db.q

        async def operate(conn: Conn) -> None:
            async with conn.transaction():
                cur = await conn.execute(q["lock_for_operator"], (name,))
                rows = await cur.fetchall()
                if not rows:
                    raise SubscriptionNotFound(
                        f"no subscription named {name!r}; see `tidings subscriptions`"
                    )
                owners = sorted({owner for owner, live in rows if live})
                if owners and not force:
                    raise SubscriptionInUse(
                        f"subscription {name!r} is run by {', '.join(owners)}: stop it first, "
                        "or force it"
                    )
                for query, params in writes:
                    await conn.execute(q[query], params)
                await conn.execute(
                    q["operator_audit"], (audit.actor, audit.action, audit.target, audit.detail)
                )

        await self._db.run(what, operate)

    async def reset_subscription(
        self, name: str, position: int, audit: AuditEntry, *, force: bool = False
    ) -> None:
        writes = [("reset_partitions", (position, name)), ("drop_held_above", (name, position))]
        await self._operate("reset a subscription", name, audit, force, writes)

    async def delete_subscription(
        self, name: str, audit: AuditEntry, *, force: bool = False
    ) -> None:
        writes = [("delete_partitions", (name,)), ("drop_held_above", (name, -1))]
        await self._operate("delete a subscription", name, audit, force, writes)

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
        rows = await self._db.rows(
            "held",
            (subscription, subscription, stream, stream, status, status, id, id, limit),
        )
        return [held_from_row(row) for row in rows]

    async def held_summaries(
        self, *, subscription: str | None = None, status: str | None = None, limit: int = 100_000
    ) -> list[Held]:
        name = "held_summaries_any" if status is None else "held_summaries"
        params = {"status": status, "subscription": subscription, "limit": limit}
        rows = await self._db.rows(name, params)  # type: ignore[arg-type]
        return [held_from_row(row) for row in rows]

    async def held_tails(self, ids: Sequence[int]) -> dict[int, str]:
        rows = await self._db.rows("held_tails", (list(ids),))
        return {int(i): t or "" for i, t in rows}

    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        if not partitions:
            return set()
        rows = await self._db.rows("held_streams", (subscription, list(partitions)))
        return {r[0] for r in rows}

    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        if not partitions:
            return []
        name = "due_streams_sequenced" if sequenced else "due_streams"
        return [r[0] for r in await self._db.rows(name, (subscription, list(partitions)))]

    async def held_counts(self) -> list[tuple[str, str, int]]:
        return [(s, st, int(n)) for s, st, n in await self._db.rows("held_counts")]

    # --- outcomes, schedule, documents, audit -------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        rows = await self._db.rows("outcome", (message_id,))
        return Outcome(*rows[0]) if rows else None

    async def outcomes(self, *, status: str | None = None, limit: int = 100) -> list[Outcome]:
        rows = await self._db.rows("outcomes", {"status": status, "limit": limit})  # type: ignore[arg-type]
        return [Outcome(*row) for row in rows]

    async def outcome_counts(self) -> list[tuple[str, int]]:
        return [(str(s), int(n)) for s, n in await self._db.rows("outcome_counts")]

    async def release_due(self, limit: int = 500) -> int:
        rows = await self._db.rows("due_scheduled", (limit,))
        if not rows:
            return 0
        await self.commit(release(rows))
        return len(rows)

    async def next_due(self) -> float | None:
        found = (await self._db.rows("next_due"))[0][0]
        return None if found is None else max(0.0, float(found))

    async def document(self, collection: str, key: str) -> Document:
        rows = await self._db.rows("get_document", (collection, key))
        return Document(rows[0][0], rows[0][1]) if rows else Document(None, 0)

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        return [(k, d) for k, d in await self._db.rows("documents", (collection, limit))]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        return [AuditEntry(*row) for row in await self._db.rows("audit_entries", (limit,))]
