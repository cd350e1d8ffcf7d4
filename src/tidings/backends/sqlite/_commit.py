"""Writing one group commit to SQLite: learn what the checks need, plan, write the plan."""

from __future__ import annotations

import sqlite3
import time

from tidings.backends._plan import Head, Plan, Result, plan_group
from tidings.backends.sqlite._database import QUERIES as Q
from tidings.backends.sqlite._database import json_array
from tidings.store import Transaction

#: The most stream versions remembered; beyond it they are forgotten (and read again).
_REMEMBERED = 100_000


class GroupWriter:
    """Writes groups of transactions through one connection, remembering what it committed.

    A group is planned on what this connection last committed (the log's top, the versions of
    the streams written here; any other stream taken to be new, every message id taken to be
    new) without reading the log. Another process may have written since, but the log only
    grows, so a guess it made wrong always breaks a unique index (a global position, a stream
    position or a message id taken already): then the guess's rows are undone and the group
    is planned again on what is read, as it is whenever the guess would refuse a transaction,
    whenever an append of no messages (which inserts nothing to collide) is in the group, and
    whenever nothing is remembered.
    """

    def __init__(self) -> None:
        #: whether ``_top`` and ``_versions`` hold what this connection last committed
        self._known = False
        self._top = 0
        self._versions: dict[str, int] = {}
        self._written: tuple[int, dict[str, int]] | None = None

    def write(self, cursor: sqlite3.Cursor, txs: list[Transaction]) -> list[Result]:
        """Plan ``txs`` and write the plan in the cursor's open write transaction: each
        transaction's result, in order. Call :meth:`committed` once it is committed."""
        known, self._known, self._written = self._known, False, None
        streams: set[str] = set()
        moved: set[tuple[str, int]] = set()
        clock = False
        for tx in txs:
            for op in tx.appends:
                streams.add(op.stream)
                known = known and bool(op.messages)
            for m in tx.checkpoints:
                moved.add((m.subscription, m.partition))
            clock = clock or bool(tx.held or tx.scheduled)
        # SQLite's clock when due times are set (they are compared with it, at its resolution),
        # else this process's: the same clock, without a statement.
        now = float(cursor.execute(Q["now"]).fetchone()[0]) if clock else time.time()
        # Document versions are always read: no unique index would catch a wrong guess of one.
        documents = _documents(cursor, txs)
        plan = None
        if known:
            head = Head(
                self._top,
                now,
                self._remembered(streams),
                {},
                _partitions(cursor, moved),
                dict(documents),
            )
            plan = self._guess(cursor, txs, head)
        if plan is None:
            head = Head(0, now, {}, {}, _partitions(cursor, moved), documents)
            _read(cursor, txs, head)
            plan = plan_group(txs, head)
            _write_log(cursor, plan)
        _write_rest(cursor, plan)
        self._written = (plan.top, head.versions)
        return plan.results

    def committed(self) -> None:
        """The group last written is committed: remember what the file now holds."""
        if self._written is not None:
            self._top, versions = self._written
            self._known = True
            if len(self._versions) > _REMEMBERED:
                self._versions.clear()
            self._versions.update(versions)

    def _remembered(self, streams: set[str]) -> dict[str, int]:
        remembered = self._versions
        return {s: remembered[s] for s in streams if s in remembered}

    def _guess(self, cursor: sqlite3.Cursor, txs: list[Transaction], head: Head) -> Plan | None:
        """Plan on what is remembered and write the log's rows; None (with nothing written)
        when a guess refused a transaction or broke a unique index."""
        plan = plan_group(txs, head)
        for _, error in plan.results:
            if error is not None:
                return None
        try:
            _write_log(cursor, plan)
        except sqlite3.IntegrityError:
            return None
        return plan


def _read(cursor: sqlite3.Cursor, txs: list[Transaction], head: Head) -> None:
    """Fill in what the group's checks need of the log, read from the file."""
    (head.top,) = cursor.execute(Q["last_position"]).fetchone()
    for tx in txs:
        for op in tx.appends:
            if op.stream not in head.versions:
                (version,) = cursor.execute(Q["stream_version"], (op.stream,)).fetchone()
                head.versions[op.stream] = version
            for m in op.messages:
                found = cursor.execute(Q["known_id"], (m.id,)).fetchone()
                if found is not None:
                    head.known[m.id] = found[0]


def _partitions(
    cursor: sqlite3.Cursor, moved: set[tuple[str, int]]
) -> dict[tuple[str, int], tuple[str | None, int]]:
    """Owner and checkpoint of every partition whose checkpoint the group moves."""
    if not moved:
        return {}
    found = cursor.execute(Q["moved_partitions"], (json_array(moved),)).fetchall()
    return {(s, p): (owner, position) for s, p, owner, position in found}


def _documents(cursor: sqlite3.Cursor, txs: list[Transaction]) -> dict[tuple[str, str], int]:
    """The version of every stored document the group writes or checks."""
    keys = {(doc.collection, doc.key) for tx in txs for doc in tx.documents}
    if not keys:
        return {}
    found = cursor.execute(Q["document_versions"], (json_array(keys),)).fetchall()
    return {(c, k): version for c, k, version in found}


def _write_log(cursor: sqlite3.Cursor, plan: Plan) -> None:
    """Insert the plan's log rows, or (raising) none of them."""
    if len(plan.rows) == 1:
        # One statement, undone by SQLite if it fails; and after a disk sync, executemany would
        # cost one row several microseconds more.
        cursor.execute(Q["insert_log"], plan.rows[0])
    elif plan.rows:
        cursor.execute(Q["savepoint"])
        try:
            cursor.executemany(Q["insert_log"], plan.rows)
        except BaseException:
            cursor.execute(Q["rollback_to"])
            raise
        finally:
            cursor.execute(Q["release"])


def _write_rest(cursor: sqlite3.Cursor, plan: Plan) -> None:
    if plan.checkpoints:
        cursor.executemany(Q["move_checkpoint"], plan.checkpoint_rows())
    if plan.outcomes:
        cursor.executemany(Q["upsert_outcome"], plan.outcome_rows())
    if plan.documents:
        cursor.executemany(Q["put_document"], plan.document_rows())
    if plan.applied:
        for name, params in plan.statements:
            cursor.executemany(Q[name], params)
