"""Planning one group commit: which transactions of the group can be applied, and what to write.

Pure code, no I/O: the store reads what the plan needs (the log's top, the versions of the streams
appended to, which message ids are stored already, the partitions whose checkpoints move, the
versions of the documents written or checked) under the append lock, plans here, and writes the plan in the same database transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from tidings.errors import DocumentConflict, LeaseLost, WrongExpectedVersion
from tidings.records import ANY, Appended, Outcome, Transaction

_encoder = msgspec.json.Encoder()

#: A transaction's result: what it appended, or why it was refused.
Result = tuple[list[Appended] | None, Exception | None]
_Partition = tuple[str, int]
#: (collection, key) of a document
_Document = tuple[str, str]
#: ``upsert_outcomes``' array parameters, in its order: the fields of ``Outcome`` it stores
_OUTCOME_COLUMNS = ("message_id", "type", "status", "result", "reason", "code", "error", "attempts")


class Head(msgspec.Struct):
    """What the database holds that a group's checks depend on, read in the group's transaction
    (the whole of each dictionary need not be: only the keys the group touches)."""

    #: the global position of the log's last message
    top: int
    #: the database clock (epoch seconds)
    now: float
    #: stream -> version, for every stream the group appends to
    versions: dict[str, int]
    #: message id -> global position, for the group's message ids already in the log
    known: dict[str, int]
    #: (subscription, partition) -> (owner, checkpoint), for every checkpoint the group moves
    partitions: dict[_Partition, tuple[str | None, int]]
    #: (collection, key) -> version, for the group's documents that are stored (absent: 0)
    documents: dict[_Document, int] = msgspec.field(default_factory=dict)


class Plan(msgspec.Struct):
    """What to write for a group: log rows, the checkpoint moves, command outcomes and documents
    of the whole group, then every other statement of the applied transactions in order, and each
    transaction's result.

    A log row is ``(global_position, stream, stream_position, id, kind, type, version, data,
    correlation_id, causation_id, headers, recorded_at)``, recorded at ``now``. Checkpoints and
    outcomes, and documents (with their versions), are gathered across the group's transactions,
    each key keeping the last value given for it (what applying them one after the other leaves): their tables are written by nothing
    else in a group, so they commute with every other statement, and a worker's group of a
    hundred handled commands writes its outcomes in one statement, not a hundred."""

    #: the database clock the group is written at (epoch seconds)
    now: float
    #: the global position of the last row, planned or stored
    top: int
    #: each transaction's result, in order
    results: list[Result] = msgspec.field(default_factory=list)
    rows: list[tuple[Any, ...]] = msgspec.field(default_factory=list)
    #: (subscription, partition) -> the checkpoint's new position
    checkpoints: dict[_Partition, int] = msgspec.field(default_factory=dict)
    #: message id -> its last outcome in the group
    outcomes: dict[str, Outcome] = msgspec.field(default_factory=dict)
    #: (collection, key) -> the document's last data in the group (None: deleted) and version
    documents: dict[_Document, tuple[bytes | None, int]] = msgspec.field(default_factory=dict)
    #: the transactions not refused that hold more than appends, in order
    applied: list[Transaction] = msgspec.field(default_factory=list)

    @property
    def statements(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Everything the applied transactions hold besides appends, checkpoints, outcomes and
        documents, as
        ``(query name, parameter rows)`` in order, a run of one query's rows merged into one."""
        return _statements(self.applied, self.now) if self.applied else []

    def log_columns(self) -> list[list[Any]]:
        """The log rows as one list per column but ``recorded_at`` (``insert_log``'s array
        parameters; its one ``now`` is a parameter of its own)."""
        return [list(column) for column in zip(*self.rows, strict=True)][:-1]

    def checkpoint_rows(self) -> list[tuple[int, str, int]]:
        """``move_checkpoint``'s parameter rows."""
        return [(position, s, p) for (s, p), position in self.checkpoints.items()]

    def document_rows(self) -> list[tuple[str, str, bytes | None, int]]:
        """``put_document``'s parameter rows."""
        return [(c, k, data, version) for (c, k), (data, version) in self.documents.items()]

    def outcome_rows(self) -> list[tuple[Any, ...]]:
        """The outcomes as rows of ``_OUTCOME_COLUMNS`` then ``updated_at``."""
        now = self.now
        return [
            (*(getattr(o, name) for name in _OUTCOME_COLUMNS), now) for o in self.outcomes.values()
        ]

    def outcome_columns(self) -> list[list[Any]]:
        """The outcomes as one list per column (``upsert_outcomes``' array parameters)."""
        outcomes = self.outcomes.values()
        return [[getattr(o, name) for o in outcomes] for name in _OUTCOME_COLUMNS]


class _Refused(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


def plan_group(txs: Sequence[Transaction], head: Head) -> Plan:
    """Check each transaction against the database and the transactions before it in the group;
    a transaction whose check fails is refused alone and leaves nothing behind.

    Planning updates ``head``'s dictionaries with what each transaction it does not refuse
    writes: they are the group's working state (or a store's own indexes, kept by it)."""
    plan = Plan(head.now, head.top)
    results = plan.results
    for tx in txs:
        try:
            results.append((_plan_one(plan, tx, head), None))
        except _Refused as refused:
            results.append((None, refused.error))
    return plan


def _plan_one(plan: Plan, tx: Transaction, head: Head) -> list[Appended]:
    """Add ``tx`` to ``plan``, and what it appends to ``head``; raise ``_Refused``, with
    nothing of it left in either, when one of its checks fails."""
    rows, versions, known = plan.rows, head.versions, head.known
    first, top = len(rows), plan.top
    #: the version before ``tx`` of each stream it appends to, to undo it
    undo: dict[str, int] = {}
    try:
        results = _plan_appends(plan, tx, head, undo) if tx.appends else []
        if tx.beyond_appends():
            _plan_rest(plan, tx, head)
    except _Refused:
        for row in rows[first:]:
            del known[row[3]]
        del rows[first:]
        versions.update(undo)
        plan.top = top
        raise
    return results


def _plan_appends(plan: Plan, tx: Transaction, head: Head, undo: dict[str, int]) -> list[Appended]:
    """Plan ``tx``'s appends: its log rows and the log's top in ``plan``, each stream's version
    and each message id's position in ``head``."""
    rows, versions, known = plan.rows, head.versions, head.known
    top, now = plan.top, plan.now
    results: list[Appended] = []
    for op in tx.appends:
        stream = str(op.stream)  # stored as text, not as a str subclass (InternalStream)
        before = version = versions.get(stream, 0)
        if stream not in undo:
            undo[stream] = before
        for m in op.messages:
            # A message id is recorded once: one stored already, or earlier in the group or in
            # this transaction, is skipped.
            if m.id in known:
                continue
            version += 1
            top += 1
            known[m.id] = top
            rows.append(
                (
                    top,
                    stream,
                    version,
                    m.id,
                    m.kind,
                    m.type,
                    m.version,
                    m.data,
                    m.correlation_id,
                    m.causation_id,
                    m.headers,
                    now,
                )
            )
        versions[stream] = version
        if version == before and op.messages:
            # Every message is stored already (a retry): succeed without checking the version.
            results.append(Appended(stream, version, known[op.messages[-1].id]))
        elif op.expected_version != ANY and op.expected_version != before:
            raise _Refused(WrongExpectedVersion(stream, op.expected_version, before))
        else:
            results.append(Appended(stream, version, top))
    plan.top = top
    return results


def _plan_rest(plan: Plan, tx: Transaction, head: Head) -> None:
    """Plan what ``tx`` holds besides appends, once its checks pass."""
    partitions, stored = head.partitions, head.documents
    for move in tx.checkpoints:
        found = partitions.get((move.subscription, move.partition))
        if found is None or found != (move.owner, move.expected):
            raise _Refused(LeaseLost())
    # What this transaction writes to documents: the last data and version of each.
    local_documents: dict[_Document, tuple[bytes | None, int]] = {}
    for doc in tx.documents:
        key = (doc.collection, doc.key)
        seen = local_documents.get(key)
        version = stored.get(key, 0) if seen is None else seen[1]
        if doc.expected is not None and doc.expected != version:
            raise _Refused(DocumentConflict(doc.collection, doc.key, doc.expected, version))
        if not doc.check:
            local_documents[key] = (doc.data, version + 1)
    # Every check passed: from here on nothing refuses this transaction.
    for move in tx.checkpoints:
        partitions[(move.subscription, move.partition)] = (move.owner, move.position)
        plan.checkpoints[(move.subscription, move.partition)] = move.position
    for o in tx.outcomes:
        plan.outcomes.pop(o.message_id, None)  # keep the order of the last ones
        plan.outcomes[o.message_id] = o
    for key, written in local_documents.items():
        stored[key] = written[1]
        plan.documents[key] = written
    plan.applied.append(tx)


def _statements(txs: list[Transaction], now: float) -> list[tuple[str, list[tuple[Any, ...]]]]:
    out: list[tuple[str, list[tuple[Any, ...]]]] = []

    def add(name: str, params: list[tuple[Any, ...]]) -> None:
        if not params:
            return
        if out and out[-1][0] == name:
            out[-1][1].extend(params)
        else:
            out.append((name, params))

    for tx in txs:
        add(
            "upsert_held",
            [
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
                )
                for h in tx.held
            ],
        )
        add("delete_held", [(g.subscription, g.global_position) for g in tx.unheld])
        add(
            "schedule",
            [
                (
                    s.message.id,
                    s.at if s.at is not None else now + (s.delay or 0.0),
                    s.stream,
                    s.message.kind,
                    s.message.type,
                    s.message.version,
                    s.message.data,
                    s.message.correlation_id,
                    s.message.causation_id,
                    s.message.headers,
                )
                for s in tx.scheduled
            ],
        )
        add("unschedule", [(message_id,) for message_id in tx.unscheduled])
        add("add_audit", [(now, e.actor, e.action, e.target, e.detail) for e in tx.audit])
    return out
