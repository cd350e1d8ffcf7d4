"""Writing one group commit to SQLite: learn what the checks need, plan, write the plan."""

from __future__ import annotations

import sqlite3
import time

from tidings.backends._plan import Head, Plan, Result, plan_group
from tidings.backends.sqlite._database import QUERIES as Q
from tidings.backends.sqlite._database import json_array
from tidings.records import Transaction

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
        #: whether ``_head`` holds what this connection last committed
        self._known = False
        #: what every group is planned on: the log's top and the stream versions are what is
        #: remembered (planning moves them on); the rest is each group's own
        self._head = Head(0, 0.0, {}, {}, {})

    def write(self, cursor: sqlite3.Cursor, txs: list[Transaction]) -> list[Result]:
        """Plan ``txs`` and write the plan in the cursor's open write transaction: each
        transaction's result, in order. Call :meth:`committed` once it is committed."""
        head = self._head
        known, self._known = self._known and len(head.versions) <= _REMEMBERED, False
        moved: set[tuple[str, int]] = set()
        documents: set[tuple[str, str]] = set()
        clock = False
        for tx in txs:
            for op in tx.appends:
                known = known and bool(op.messages)
            if tx.beyond_appends():
                moved.update((m.subscription, m.partition) for m in tx.checkpoints)
                documents.update((doc.collection, doc.key) for doc in tx.documents)
                clock = clock or bool(tx.held or tx.scheduled)
        # SQLite's clock when due times are set (they are compared with it, at its resolution),
        # else this process's: the same clock, without a statement.
        head.now = float(cursor.execute(Q["now"]).fetchone()[0]) if clock else time.time()
        plan = self._guess(cursor, txs, moved, documents) if known else None
        if plan is None:
            # Nothing remembered holds (or it is too much): read what the group needs.
            head.versions.clear()
            self._read_rest(cursor, moved, documents)
            _read(cursor, txs, head)
            plan = plan_group(txs, head)
            _write_log(cursor, plan)
        _write_rest(cursor, plan)
        head.top = plan.top
        return plan.results

    def write_alone(self, cursor: sqlite3.Cursor, txs: list[Transaction]) -> list[Result] | None:
        """A group of one transaction appending one message, planned on what is remembered and
        inserted by one statement outside a transaction, which SQLite commits as a transaction
        of its own (one lock, one disk sync, no ``BEGIN`` and ``COMMIT`` to run): its result.
        None, with nothing written, when the group is not that or a guess fails; ``write``
        writes it then, reading what it needs."""
        if not (self._known and len(txs) == 1 and _one_message(txs[0])):
            return None
        self._known = False  # until the statement is committed
        head = self._head
        head.now, head.known = time.time(), {}
        plan = plan_group(txs, head)
        if plan.results[0][1] is not None:
            return None
        try:
            cursor.execute(Q["insert_log"], plan.rows[0])
        except sqlite3.IntegrityError:
            return None  # another process wrote what was guessed to be free
        head.top = plan.top
        self._known = True
        return plan.results

    def committed(self) -> None:
        """The group last written is committed: what the head holds is what the file holds."""
        self._known = True

    def _read_rest(
        self, cursor: sqlite3.Cursor, moved: set[tuple[str, int]], documents: set[tuple[str, str]]
    ) -> None:
        """Read the partitions and documents the group touches into the head, with no message
        id known. (Document versions are always read: no unique index would catch a wrong
        guess of one.)"""
        head = self._head
        head.known = {}
        head.partitions = _partitions(cursor, moved) if moved else {}
        head.documents = _documents(cursor, documents) if documents else {}

    def _guess(
        self,
        cursor: sqlite3.Cursor,
        txs: list[Transaction],
        moved: set[tuple[str, int]],
        documents: set[tuple[str, str]],
    ) -> Plan | None:
        """Plan on what is remembered and write the log's rows; None (with nothing written)
        when a guess refused a transaction or broke a unique index."""
        self._read_rest(cursor, moved, documents)
        plan = plan_group(txs, self._head)
        for _, error in plan.results:
            if error is not None:
                return None
        try:
            _write_log(cursor, plan)
        except sqlite3.IntegrityError:
            return None
        return plan


def _one_message(tx: Transaction) -> bool:
    """Whether ``tx`` appends one message and does nothing else."""
    return len(tx.appends) == 1 and len(tx.appends[0].messages) == 1 and not tx.beyond_appends()


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
    found = cursor.execute(Q["moved_partitions"], (json_array(moved),)).fetchall()
    return {(s, p): (owner, position) for s, p, owner, position in found}


def _documents(cursor: sqlite3.Cursor, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The version of every stored document of ``keys`` (those the group writes or checks)."""
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
