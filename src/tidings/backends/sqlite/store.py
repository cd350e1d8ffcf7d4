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
from pathlib import Path

from tidings.backends._group import GroupCommitter
from tidings.backends._plan import Result
from tidings.backends._reads import SqlReads
from tidings.backends.sqlite._commit import GroupWriter
from tidings.backends.sqlite._database import QUERIES, Database
from tidings.errors import (
    ConfigurationError,
    StoreClosed,
    StoreUnavailable,
    SubscriptionInUse,
    SubscriptionNotFound,
)
from tidings.records import Appended, AuditEntry, Transaction


class SqliteStore(SqlReads):
    """A store in one SQLite file. Use ``App(store="sqlite:///app.db")`` or build it directly.
    Its reads are the SQL stores' (:class:`~tidings.backends._reads.SqlReads`).

    ``synchronous`` is SQLite's: ``full`` (the default) syncs the disk at every commit,
    ``normal`` may lose the last commits on a power cut. A write lock another process holds
    longer than ``lock_timeout`` seconds is reported as ``StoreUnavailable``.
    """

    _db: Database

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
        alone = self._db.run_now(lambda c: writer.write_alone(c, txs))
        if alone is not None:
            return alone
        return self._db.transaction_now(lambda c: writer.write(c, txs), writer.committed)

    # --- subscriptions: what is written ------------------------------------------------------

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
