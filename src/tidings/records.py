"""The records a store keeps and a transaction carries: appends and where they went, checkpoint
moves, held messages, outcomes, documents, schedules, audit entries, what the console counts; and
``Transaction``, everything one unit of work commits at once. Plain immutable values (msgspec
Structs), so that every backend takes and returns the same ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tidings.messages import NewMessage

#: ``expected_version``: append whatever the stream's version is.
ANY: Final = -2
#: ``expected_version``: the stream must not exist yet (the same as expecting version 0).
NO_STREAM: Final = 0


class AppendOp(msgspec.Struct, frozen=True, gc=False):
    """Append ``messages`` to ``stream``; if ``expected_version`` is not ``ANY`` the stream must be at it.

    A stream's version is the position of its last message (0 for an empty stream); positions
    start at 1 and have no gaps.
    """

    stream: str
    messages: Sequence[NewMessage]
    expected_version: int = ANY


class Appended(msgspec.Struct, frozen=True, gc=False):
    """Where an append put its messages."""

    stream: str
    #: the stream's version after the append
    version: int
    #: the global position of the last message appended (or found already there)
    global_position: int


class CheckpointMove(msgspec.Struct, frozen=True, gc=False):
    """Move a subscription partition's checkpoint from ``expected`` to ``position``.

    Guarded: the commit fails with ``LeaseLost`` (and nothing in it is applied) unless the partition
    is still owned by ``owner`` and still at ``expected``. This fences off a worker whose lease
    expired while it was busy, so that its work is never applied twice.
    """

    subscription: str
    partition: int
    owner: str
    expected: int
    position: int


class Attempt(msgspec.Struct, frozen=True, gc=False):
    """One failed attempt at handling a message: when, the error, and its traceback."""

    at: float
    error: str
    traceback: str | None = None


class Held(msgspec.Struct, gc=False):
    """A message a subscription holds back: failed (``retrying`` or ``dead``), or ``waiting``
    behind an earlier held message of its stream, or queued for ``replay`` by an operator.

    ``id`` is assigned by the store (0 on a new row); rows are keyed by
    ``(subscription, global_position)``. ``due_at`` is when a ``retrying`` row is tried again, on
    the store's clock. Written with ``due_in`` (seconds from the store's now) instead.
    """

    subscription: str
    partition: int
    stream: str
    global_position: int
    message_id: str
    type: str
    status: str
    attempts: int = 0
    error: str | None = None
    traceback: str | None = None
    history: list[Attempt] = msgspec.field(default_factory=list)
    due_in: float | None = None
    due_at: float | None = None
    first_failed_at: float | None = None
    last_failed_at: float | None = None
    id: int = 0


#: Held statuses.
RETRYING: Final = "retrying"
DEAD: Final = "dead"
WAITING: Final = "waiting"
REPLAY: Final = "replay"


class HeldDelete(msgspec.Struct, frozen=True, gc=False):
    """Stop holding a message (it was handled, or skipped)."""

    subscription: str
    global_position: int


#: Outcome statuses.
PENDING: Final = "pending"
SUCCEEDED: Final = "succeeded"
REFUSED: Final = "refused"
FAILED: Final = "failed"
FINAL: Final = frozenset({SUCCEEDED, REFUSED, DEAD})


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What became of a sent command: ``succeeded`` (with ``result``, JSON), ``refused`` (with
    ``reason``/``code``; a ``Refused`` subclass's name in ``error``, its JSON attributes in
    ``result``), ``failed`` (still being retried, ``attempts`` so far), ``dead`` (given up), or
    ``pending`` (not handled yet)."""

    message_id: str
    type: str
    status: str
    result: bytes | None = None
    reason: str | None = None
    code: str | None = None
    error: str | None = None
    attempts: int = 0
    updated_at: float = 0.0

    @property
    def final(self) -> bool:
        """Whether this outcome will not change any more (short of an operator's retry)."""
        return self.status in FINAL

    def value(self) -> Any:
        """The handler's result, decoded from JSON (``None`` unless succeeded)."""
        if self.result is None or self.status != SUCCEEDED:
            return None
        return msgspec.json.decode(self.result)


class DocumentWrite(msgspec.Struct, frozen=True, gc=False):
    """Put (``data``) or delete (``None``) one document of a collection; or, as a ``check``,
    write nothing.

    With ``expected`` the transaction commits only if the document is at that version then
    (0: never written), else it fails with ``DocumentConflict``. A document's version counts its
    writes (a delete too), so a handler that read it at a version and writes it at that version
    cannot overwrite a write it did not see. Writes and checks apply in order: a write moves the
    version on for the checks after it.
    """

    collection: str
    key: str
    data: bytes | None
    expected: int | None = None
    #: only check ``expected``; ``data`` is ignored
    check: bool = False


class Document(msgspec.Struct, frozen=True, gc=False):
    """A stored document's JSON (``None`` when absent or deleted) and its version (0: never
    written)."""

    data: bytes | None
    version: int


class Scheduled(msgspec.Struct, frozen=True, gc=False):
    """A message to be appended to ``stream`` when due: at ``at`` (epoch seconds) or ``delay``
    seconds after the store's now."""

    stream: str
    message: NewMessage
    at: float | None = None
    delay: float | None = None


class AuditEntry(msgspec.Struct, frozen=True, gc=False):
    """An operator action: who, what, on what (written in the transaction that does it)."""

    actor: str
    action: str
    target: str
    detail: str = ""
    at: float = 0.0
    id: int = 0


class PartitionInfo(msgspec.Struct, frozen=True, gc=False):
    """One partition of a subscription: its checkpoint and who holds its lease until when."""

    subscription: str
    partition: int
    partitions: int
    position: int
    owner: str | None
    lease_expires: float | None


class TypeCount(msgspec.Struct, frozen=True, gc=False):
    """How many messages of one kind and type the log holds, and where the first one is."""

    kind: str
    type: str
    count: int
    first_position: int
    first_recorded_at: float


class TypeActivity(msgspec.Struct, frozen=True, gc=False):
    """How many messages of one kind and type the log holds (of those asked for): the last one's
    global position, and the latest time one of them was recorded."""

    kind: str
    type: str
    count: int
    last_position: int
    last_recorded_at: float


#: The header an inbox records every arrival with: the service it came from (``ce-source``).
ARRIVED_FROM: Final = "tidings-source"


def header_key(name: str) -> bytes:
    """How a header's key appears in stored headers (compact JSON): ``"name":``."""
    return b'"' + name.encode() + b'":'


class Backlog(msgspec.Struct, frozen=True, gc=False):
    """Messages of one stream in one span of the log: ``count`` messages with a global position
    above ``after`` (and at most the next bound asked for); ``oldest_at`` is when the first was
    recorded."""

    stream: str
    after: int
    count: int
    oldest_at: float


class Transaction(msgspec.Struct):
    """Everything one unit of work commits at once, or not at all.

    Appends are applied in order, so two appends to one stream in one transaction see each other.
    """

    appends: list[AppendOp] = msgspec.field(default_factory=list)
    checkpoints: list[CheckpointMove] = msgspec.field(default_factory=list)
    held: list[Held] = msgspec.field(default_factory=list)
    unheld: list[HeldDelete] = msgspec.field(default_factory=list)
    outcomes: list[Outcome] = msgspec.field(default_factory=list)
    documents: list[DocumentWrite] = msgspec.field(default_factory=list)
    scheduled: list[Scheduled] = msgspec.field(default_factory=list)
    unscheduled: list[str] = msgspec.field(default_factory=list)
    audit: list[AuditEntry] = msgspec.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.appends) or self.beyond_appends()

    def beyond_appends(self) -> bool:
        """Whether it holds anything besides appends."""
        return bool(
            self.checkpoints
            or self.held
            or self.unheld
            or self.outcomes
            or self.documents
            or self.scheduled
            or self.unscheduled
            or self.audit
        )

    def extend(self, other: Transaction) -> None:
        """Add everything ``other`` holds after what this one holds."""
        for name in self.__struct_fields__:
            getattr(self, name).extend(getattr(other, name))
