"""The SQLite store: every capability of :class:`~tidings.store.Store` on one file.

Commits go through the one group committer: every transaction that reaches ``commit()`` in one
loop iteration is written in one SQLite transaction, so concurrent callers share one disk sync.
Statements run on the event loop's thread (a round trip to another thread would cost more than
the disk sync); several processes may share the file, each waiting out the others' write lock
with asyncio sleeps.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from tidings.backends._group import GroupCommitter
from tidings.backends._plan import Result
from tidings.backends._shared import held_from_row, release
from tidings.backends.sqlite._commit import GroupWriter
from tidings.backends.sqlite._database import QUERIES, Database, json_array
from tidings.errors import (
    ConfigurationError,
    StoreClosed,
    StoreUnavailable,
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
from tidings.store import Store

#: ``read_backwards`` from the end of a stream
_END = 1 << 62


class SqliteStore(Store):
    """A store in one SQLite file. Use ``App(store="sqlite:///app.db")`` or build it directly.

    ``synchronous`` is SQLite's: ``full`` (the default) syncs the disk at every commit,
    ``normal`` may lose the last commits on a power cut. A write lock another process holds
    longer than ``lock_timeout`` seconds is reported as ``StoreUnavailable``.
    """

    def __init__(
        self, path: str, *, synchronous: str = "full", lock_timeout: float | str = 60.0
    ) -> None:
        self._db = Database(path, synchronous=synchronous, lock_timeout=float(lock_timeout))
        self.path = self._db.path
        #: the ``synchronous`` setting it runs with: FULL, NORMAL or EXTRA
        self.synchronous = self._db.synchronous
        self.url = f"sqlite:///{self.path}"
        self._committer: GroupCommitter | None = None
        self._writer = GroupWriter()

    # --- life cycle and commits ---------------------------------------------------------------

    def check_file(self, *, exists: bool = False) -> None:
        """Raise ``StoreUnavailable`` naming the directory when the file's directory is missing,
        and (with ``exists``: a reader, which must not create a file) naming the file when it is."""
        path = Path(self.path)
        if not path.parent.is_dir():
            raise StoreUnavailable(
                f"SQLite file {self.path!r}: the directory {str(path.parent.resolve())!r} does not "
                "exist. sqlite:///relative.db is relative to the current directory "
                f"({os.getcwd()}); sqlite:////absolute.db (four slashes) is an absolute path"
            )
        if exists and not path.is_file():
            raise StoreUnavailable(
                f"no SQLite file {str(path.resolve())!r}: check the store URL (a reader never "
                "creates one; sqlite:///relative.db is relative to the current directory, "
                "sqlite:////absolute.db an absolute path)"
            )

    async def open(self) -> None:
        if self._committer is not None:
            return
        self.check_file()
        await self._db.open()
        self._writer = GroupWriter()  # what it remembers holds for one connection
        self._committer = GroupCommitter(
            self._write, write_now=self._write_now, loop=asyncio.get_running_loop()
        )

    async def close(self) -> None:
        committer, self._committer = self._committer, None
        if committer is not None:
            await committer.close()
        self._db.close()

    async def commit(self, tx: Transaction) -> list[Appended]:
        if self._committer is None:
            raise StoreClosed()
        return await self._committer.commit(tx)

    async def _write(self, txs: list[Transaction]) -> list[Result]:
        writer = self._writer
        return await self._db.transaction(lambda c: writer.write(c, txs), writer.committed)

    def _write_now(self, txs: list[Transaction]) -> list[Result] | None:
        writer = self._writer
        return self._db.transaction_now(lambda c: writer.write(c, txs), writer.committed)

    # --- the log ------------------------------------------------------------------------------

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
            start = _END if from_position is None else from_position
            rows = await self._db.read("read_backwards", (stream, start, lim))
        else:
            start = 1 if from_position is None else from_position
            rows = await self._db.read("read_forwards", (stream, start, lim))
        return [Envelope(*row) for row in rows]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        if types is None:
            rows = await self._db.read("read_all", (after, limit))
        elif not types:
            return []
        else:
            rows = await self._db.read("read_all_types", (after, json_array(types), limit))
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
            rows = await self._db.read("find_ids", (json_array(list(ids)), limit))
        elif correlation_id is not None:
            rows = await self._db.read("find_correlated", (correlation_id, limit))
        elif causation_id is not None:
            rows = await self._db.read("find_caused", (causation_id, limit))
        else:
            return []
        return [Envelope(*row) for row in rows]

    async def stream_version(self, stream: str) -> int:
        rows = await self._db.read("stream_version", (stream,))
        return int(rows[0][0])

    async def last_position(self) -> int:
        rows = await self._db.read("last_position")
        return int(rows[0][0])

    async def streams(
        self, *, prefix: str = "", limit: int = 100, internal: bool = False
    ) -> list[tuple[str, int]]:
        rows = await self._db.read("streams", (len(prefix), prefix, internal, limit))
        return [(r[0], int(r[1])) for r in rows]

    async def type_counts(self) -> list[TypeCount]:
        return [TypeCount(*row) for row in await self._db.read("type_counts")]

    async def arrivals(self) -> list[TypeActivity]:
        return [TypeActivity(*row) for row in await self._db.read("arrivals")]

    async def backlog(self, types: Sequence[str], bounds: Sequence[int]) -> list[Backlog]:
        if not types or not bounds:
            return []
        params = (json_array(bounds), min(bounds), json_array(types))
        return [Backlog(*row) for row in await self._db.read("backlog", params)]

    # --- subscriptions ----------------------------------------------------------------------------

    async def now(self) -> float:
        rows = await self._db.read("now")
        return float(rows[0][0])

    async def setup_subscription(self, name: str, partitions: int, position: int) -> None:
        def setup(cursor: sqlite3.Cursor) -> None:
            found = cursor.execute(QUERIES["subscription_size"], (name,)).fetchone()
            if found is not None:
                if found[0] != partitions:
                    raise ConfigurationError(
                        f"subscription {name!r} has {found[0]} partitions, not {partitions}"
                    )
                return
            cursor.executemany(
                QUERIES["create_partition"],
                [(name, n, partitions, position) for n in range(partitions)],
            )

        await self._db.transaction(setup)

    async def heartbeat(self, worker: str, ttl: float) -> int:
        def beat(cursor: sqlite3.Cursor) -> int:
            cursor.execute(QUERIES["heartbeat"], (worker,))
            cursor.execute(QUERIES["forget_workers"], (ttl * 10,))
            return int(cursor.execute(QUERIES["count_workers"], (ttl,)).fetchone()[0])

        return await self._db.transaction(beat)

    async def claim(self, name: str, worker: str, want: int, ttl: float) -> dict[int, int]:
        def claim(cursor: sqlite3.Cursor) -> dict[int, int]:
            owned = cursor.execute(QUERIES["owned_partitions"], (name, worker)).fetchall()
            mine = [row[0] for row in owned]
            for n in mine[want:]:
                cursor.execute(QUERIES["release_partition"], (name, n))
            mine = mine[:want]
            if len(mine) < want:
                free = cursor.execute(QUERIES["free_partitions"], (name, want - len(mine)))
                mine.extend(row[0] for row in free.fetchall())
            held = {}
            for n in mine:
                cursor.execute(QUERIES["lease_partition"], (worker, ttl, name, n))
                held[n] = cursor.execute(QUERIES["partition_position"], (name, n)).fetchone()[0]
            return held

        return await self._db.transaction(claim)

    async def release(self, worker: str) -> None:
        def release(cursor: sqlite3.Cursor) -> None:
            cursor.execute(QUERIES["release_leases"], (worker,))
            cursor.execute(QUERIES["forget_worker"], (worker,))

        await self._db.transaction(release)

    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        rows = await self._db.read("partitions", (name, name))
        return [PartitionInfo(*row) for row in rows]

    def _operate(self, cursor: sqlite3.Cursor, name: str, audit: AuditEntry, force: bool) -> None:
        """Check that an operator may act on the subscription now, and write ``audit``."""
        if cursor.execute(QUERIES["subscription_size"], (name,)).fetchone() is None:
            raise SubscriptionNotFound(
                f"no subscription named {name!r}; see `tidings subscriptions`"
            )
        owners = [row[0] for row in cursor.execute(QUERIES["live_owners"], (name,)).fetchall()]
        if owners and not force:
            raise SubscriptionInUse(
                f"subscription {name!r} is run by {', '.join(sorted(owners))}: stop it first, "
                "or force it"
            )
        now = cursor.execute(QUERIES["now"]).fetchone()[0]
        cursor.execute(
            QUERIES["add_audit"], (now, audit.actor, audit.action, audit.target, audit.detail)
        )

    async def reset_subscription(
        self, name: str, position: int, audit: AuditEntry, *, force: bool = False
    ) -> None:
        def reset(cursor: sqlite3.Cursor) -> None:
            self._operate(cursor, name, audit, force)
            cursor.execute(QUERIES["reset_partitions"], (position, name))
            cursor.execute(QUERIES["drop_held_above"], (name, position))

        await self._db.transaction(reset)

    async def delete_subscription(
        self, name: str, audit: AuditEntry, *, force: bool = False
    ) -> None:
        def delete(cursor: sqlite3.Cursor) -> None:
            self._operate(cursor, name, audit, force)
            cursor.execute(QUERIES["delete_partitions"], (name,))
            cursor.execute(QUERIES["drop_held_above"], (name, -1))

        await self._db.transaction(delete)

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
        rows = await self._db.read(
            "held", (subscription, subscription, stream, stream, status, status, id, id, limit)
        )
        return [held_from_row(row) for row in rows]

    async def held_summaries(
        self, *, subscription: str | None = None, status: str | None = None, limit: int = 100_000
    ) -> list[Held]:
        if status is None:
            rows = await self._db.read("held_summaries_any", (subscription, limit))
        else:
            rows = await self._db.read("held_summaries", (status, subscription, limit))
        return [held_from_row(row) for row in rows]

    async def held_tails(self, ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(ids), 5000):
            chunk = json_array(list(ids[start : start + 5000]))
            found.update((int(i), t or "") for i, t in await self._db.read("held_tails", (chunk,)))
        return found

    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        if not partitions:
            return set()
        rows = await self._db.read("held_streams", (subscription, json_array(partitions)))
        return {r[0] for r in rows}

    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        if not partitions:
            return []
        query = "due_streams_sequenced" if sequenced else "due_streams"
        rows = await self._db.read(query, (subscription, json_array(partitions)))
        return [r[0] for r in rows]

    async def held_counts(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self._db.read("held_counts")]

    # --- outcomes, schedule, documents, audit -----------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome | None:
        rows = await self._db.read("outcome", (message_id,))
        return Outcome(*rows[0]) if rows else None

    async def outcomes(self, *, status: str | None = None, limit: int = 100) -> list[Outcome]:
        return [Outcome(*row) for row in await self._db.read("outcomes", (status, limit))]

    async def outcome_counts(self) -> list[tuple[str, int]]:
        return [(str(s), int(n)) for s, n in await self._db.read("outcome_counts")]

    async def release_due(self, limit: int = 500) -> int:
        rows = await self._db.read("due_scheduled", (limit,))
        if not rows:
            return 0
        await self.commit(release(rows))
        return len(rows)

    async def next_due(self) -> float | None:
        rows = await self._db.read("next_due")
        return None if rows[0][0] is None else max(0.0, float(rows[0][0]))

    async def document(self, collection: str, key: str) -> Document:
        rows = await self._db.read("get_document", (collection, key))
        return Document(rows[0][0], rows[0][1]) if rows else Document(None, 0)

    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        rows = await self._db.read("documents", (collection, limit))
        return [(r[0], r[1]) for r in rows]

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        rows = await self._db.read("audit_entries", (limit,))
        return [AuditEntry(*row) for row in rows]
