"""The storage capabilities every backend implements (abstract base classes), and ``Transaction``.

A backend is a class implementing the ABCs below. The log is the foundation: one ordered sequence of
every message (commands and events alike), split into streams whose positions are gapless.
Everything a handler does is committed as one :class:`Transaction`, atomically.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tidings.messages import Envelope, NewMessage

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


class EventLog(abc.ABC):
    """The log: append atomically, read a stream, read everything in global order."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply migrations. Called once before use."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    @abc.abstractmethod
    async def commit(self, tx: Transaction) -> list[Appended]:
        """Apply everything ``tx`` holds atomically, or nothing; what each append did.

        Raises ``WrongExpectedVersion`` when a stream is not at an append's expected version, and
        ``LeaseLost`` when a checkpoint move's partition is no longer as expected. A message id
        is recorded once: a message whose id is in the log already, or earlier in ``tx``, is
        skipped, and an append all of whose messages are skipped succeeds without checking its
        expected version (a retry), at the stream's version as it is.
        """

    @abc.abstractmethod
    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """Messages of one stream by position, forwards from ``from_position`` (inclusive,
        default 1) or backwards from it (default: the end)."""

    @abc.abstractmethod
    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        """Messages in global order with a global position greater than ``after``,
        only of ``types`` when given."""

    @abc.abstractmethod
    async def stream_version(self, stream: str) -> int:
        """The position of the stream's last message, 0 when it has none."""

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The global position of the last message in the log, 0 when it is empty."""

    @abc.abstractmethod
    async def streams(
        self, *, prefix: str = "", limit: int = 100, internal: bool = False
    ) -> list[tuple[str, int]]:
        """Stream names with their versions, by name; the framework's own (``$``) streams only
        with ``internal``."""

    @abc.abstractmethod
    async def type_counts(self) -> list[TypeCount]:
        """Every kind and type of message in the log, counted, by first position."""

    @abc.abstractmethod
    async def backlog(self, types: Sequence[str], bounds: Sequence[int]) -> list[Backlog]:
        """Messages of ``types`` above the lowest of ``bounds``, counted per stream and per span:
        a message at global position ``g`` counts in the row whose ``after`` is the highest bound
        below ``g``. (A subscription's partitions have checkpoints among ``bounds``; a stream
        belongs to one partition, and its lag is the sum of its spans above that checkpoint.)"""

    async def type_activity(
        self, types: Sequence[str] | None = None, *, header: str | None = None
    ) -> list[TypeActivity]:
        """Messages of ``types`` (of every type when ``None``), only those whose headers have
        the key ``header`` when given, counted per kind and type, by the last one's position.
        This scans the log; a backend may do better."""
        wanted = None if types is None else set(types)
        key = None if header is None else header_key(header)
        found: dict[tuple[str, str], TypeActivity] = {}
        after = 0
        while page := await self.read_all(after=after, types=types, limit=5000):
            after = page[-1].global_position
            for env in page:
                if (wanted is None or env.type in wanted) and (
                    key is None or key in (env.headers_json or b"")
                ):
                    seen = found.get((env.kind, env.type))
                    found[(env.kind, env.type)] = TypeActivity(
                        env.kind,
                        env.type,
                        1 if seen is None else seen.count + 1,
                        env.global_position,
                        max(env.recorded_at, seen.last_recorded_at if seen else 0.0),
                    )
        return sorted(found.values(), key=lambda a: a.last_position)


class MessageIndex(abc.ABC):  # noqa: B024 - a capability with a default for every method
    """Messages found by id, correlation id or causation id (the console's causation chains and
    flows). Not abstract: a backend without indexes for these gets this scan of the log."""

    async def find(
        self,
        *,
        ids: Sequence[str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        """Messages matching the one filter given, in global order, at most ``limit``."""
        read_all = getattr(self, "read_all")  # noqa: B009 - EventLog's, in a complete Store
        wanted = set(ids or ())
        found: list[Envelope] = []
        after = 0
        while len(found) < limit:
            page: list[Envelope] = await read_all(after=after, limit=5000)
            if not page:
                break
            after = page[-1].global_position
            found += [
                env
                for env in page
                if (ids is not None and env.id in wanted)
                or (correlation_id is not None and env.correlation_id == correlation_id)
                or (causation_id is not None and env.causation_id == causation_id)
            ]
        return found[:limit]


class SubscriptionStore(abc.ABC):
    """Checkpoints and partition leases of subscriptions, and the workers that hold them."""

    @abc.abstractmethod
    async def now(self) -> float:
        """The store's clock (epoch seconds): every due time and lease is measured on it."""

    @abc.abstractmethod
    async def setup_subscription(self, name: str, partitions: int, position: int) -> None:
        """Create the subscription's partitions at ``position`` if it does not exist yet.

        Raises ``ConfigurationError`` if it exists with another number of partitions."""

    @abc.abstractmethod
    async def heartbeat(self, worker: str, ttl: float) -> int:
        """Record that ``worker`` is alive; returns how many workers are alive (seen within ``ttl``)."""

    @abc.abstractmethod
    async def claim(self, name: str, worker: str, want: int, ttl: float) -> dict[int, int]:
        """Renew ``worker``'s leases on the subscription and take free or expired partitions until
        it holds ``want``; release any beyond ``want``. Returns ``{partition: checkpoint}`` held."""

    @abc.abstractmethod
    async def release(self, worker: str) -> None:
        """Give up every lease ``worker`` holds and forget the worker."""

    @abc.abstractmethod
    async def partitions(self, name: str | None = None) -> list[PartitionInfo]:
        """Partitions (of one subscription, or of all), for operators."""

    @abc.abstractmethod
    async def reset_subscription(
        self, name: str, position: int, audit: AuditEntry, *, force: bool = False
    ) -> None:
        """Move every checkpoint of the subscription to ``position`` and drop its held messages
        above it (they are delivered again), writing ``audit`` in the same transaction.

        Raises ``SubscriptionNotFound`` if it does not exist, and ``SubscriptionInUse`` while a
        worker holds a lease on it, unless ``force``."""

    @abc.abstractmethod
    async def delete_subscription(
        self, name: str, audit: AuditEntry, *, force: bool = False
    ) -> None:
        """Forget the subscription: its partitions, checkpoints and held messages, writing
        ``audit`` in the same transaction. Raises as :meth:`reset_subscription`."""


class DeadLetterStore(abc.ABC):
    """Messages subscriptions hold back: failed, dead, waiting behind them, or queued for replay."""

    @abc.abstractmethod
    async def held(
        self,
        *,
        subscription: str | None = None,
        stream: str | None = None,
        status: str | None = None,
        id: int | None = None,
        limit: int = 1000,
    ) -> list[Held]:
        """Held messages matching every filter given, by subscription then global position."""

    async def held_summaries(
        self, *, subscription: str | None = None, status: str | None = None, limit: int = 100_000
    ) -> list[Held]:
        """Held messages for listing and grouping, without traceback and history (a database
        backend reads them from an index alone). Never write these rows back (the upsert would
        drop the traceback); read a row whole with :meth:`held` to change it."""
        return [
            msgspec.structs.replace(h, traceback=None, history=[])
            for h in await self.held(subscription=subscription, status=status, limit=limit)
        ]

    async def held_tails(self, ids: Sequence[int]) -> dict[int, str]:
        """The last lines of held messages' tracebacks (their raising frame and error), by id."""
        found = {}
        for id in ids:
            for h in await self.held(id=id, limit=1):
                found[h.id] = (h.traceback or "")[-(len(h.error or "") + 600) :]
        return found

    @abc.abstractmethod
    async def held_streams(self, subscription: str, partitions: Sequence[int]) -> set[str]:
        """Streams of these partitions that have any held message (later messages must wait)."""

    @abc.abstractmethod
    async def due_streams(
        self, subscription: str, partitions: Sequence[int], *, sequenced: bool = True
    ) -> list[str]:
        """Streams with a held message ready to be handled again: ``replay``, or ``retrying`` and
        due. A ``waiting`` message is never due by itself: whoever removes the message ahead of
        it (a replay, an operator's skip) marks it ``replay`` in the same transaction. With
        ``sequenced`` only a stream's first held message counts; without, any of them does."""

    @abc.abstractmethod
    async def held_counts(self) -> list[tuple[str, str, int]]:
        """``(subscription, status, count)`` of every held message, by subscription and status."""


class OutcomeStore(abc.ABC):
    """Outcomes of sent commands."""

    @abc.abstractmethod
    async def outcome(self, message_id: str) -> Outcome | None:
        """The recorded outcome, or ``None`` while the command has not been handled."""

    async def outcomes(self, *, status: str | None = None, limit: int = 100) -> list[Outcome]:
        """The latest outcomes (of ``status``), newest first; a backend lists them if it can."""
        raise NotImplementedError(f"{type(self).__name__} does not list outcomes")

    async def outcome_counts(self) -> list[tuple[str, int]]:
        """``(status, count)`` of every recorded outcome."""
        raise NotImplementedError(f"{type(self).__name__} does not count outcomes")


class ScheduleStore(abc.ABC):
    """Messages waiting for their due time."""

    @abc.abstractmethod
    async def release_due(self, limit: int = 500) -> int:
        """Append every scheduled message that is due (on the store's clock) to its stream, in due
        order, and forget it, atomically. Returns how many were released."""

    @abc.abstractmethod
    async def next_due(self) -> float | None:
        """Seconds until the next scheduled message is due (0 if one is), ``None`` if none is."""


class DocumentStore(abc.ABC):
    """Small JSON documents (read models) written through ``ctx`` in the handler's transaction."""

    @abc.abstractmethod
    async def document(self, collection: str, key: str) -> Document:
        """One document's JSON (``None`` if there is none) with its version."""

    async def get_document(self, collection: str, key: str) -> bytes | None:
        """One document's JSON, or ``None``."""
        return (await self.document(collection, key)).data

    @abc.abstractmethod
    async def documents(self, collection: str, *, limit: int = 1000) -> list[tuple[str, bytes]]:
        """A collection's ``(key, JSON)`` pairs by key."""


class AuditStore(abc.ABC):
    """The trail of operator actions."""

    @abc.abstractmethod
    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        """The latest entries, newest first."""


class ChangeFeed(abc.ABC):
    """A store that can tell a waiting worker when another process wrote to the log."""

    @abc.abstractmethod
    async def wait_for_change(self, timeout: float) -> None:
        """Return when the log may have grown, or after ``timeout`` seconds."""


class Store(
    EventLog,
    MessageIndex,
    SubscriptionStore,
    DeadLetterStore,
    OutcomeStore,
    ScheduleStore,
    DocumentStore,
    AuditStore,
    abc.ABC,
):
    """A complete backend: every capability."""

    url: str
