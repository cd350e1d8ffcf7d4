"""The PostgreSQL store: the log, its reads and the state of delivery, over one ``Database``.

Commits are group-committed (``GroupCommitter``) and written by ``_write.GroupWriter``; every
commit that appends notifies the store's channel, which :meth:`PostgresStore.wait_for_change`
listens on (``_listen``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidings.backends._group import GroupCommitter
from tidings.backends._reads import SqlReads
from tidings.backends.postgres._database import Conn, Database
from tidings.backends.postgres._listen import Listener
from tidings.backends.postgres._write import GroupWriter
from tidings.errors import (
    ConfigurationError,
    StoreClosed,
    SubscriptionInUse,
    SubscriptionNotFound,
)
from tidings.records import Appended, AuditEntry, Transaction
from tidings.store import ChangeFeed


class PostgresStore(SqlReads, ChangeFeed):
    """A store in a PostgreSQL schema. ``App(store="postgresql://user@host/db?schema=shop")`` or
    ``PostgresStore(url, schema="shop")``.

    ``url`` is a libpq connection URL or string. ``min_connections``/``max_connections`` size the
    pool; ``retry_timeout`` (also an attribute, which may be changed) is how long an operation
    keeps retrying in all while the server is unreachable before it raises ``StoreUnavailable``;
    the server is tried again at least every half second, so work resumes within about a second
    of it accepting connections again.
    """

    _db: Database

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

    # --- subscriptions: what is written ------------------------------------------------------

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
