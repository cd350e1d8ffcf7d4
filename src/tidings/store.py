"""The storage capabilities every backend implements, as abstract base classes.

A backend is a class implementing the ABCs below. The log is the foundation: one ordered sequence of
every message (commands and events alike), split into streams whose positions are gapless.
Everything a handler does is committed as one :class:`~tidings.records.Transaction`, atomically;
the values the capabilities take and return are in :mod:`tidings.records`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import msgspec

from tidings.messages import Envelope
from tidings.records import (
    ARRIVED_FROM,
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
    header_key,
)


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

    async def arrivals(self) -> list[TypeActivity]:
        """What arrived through a broker: the messages recorded with the header
        :data:`~tidings.records.ARRIVED_FROM`, counted per kind and type, by the last one's
        position. This scans the log; the database backends read an index of just those."""
        key = header_key(ARRIVED_FROM)
        found: dict[tuple[str, str], TypeActivity] = {}
        after = 0
        while page := await self.read_all(after=after, limit=5000):
            after = page[-1].global_position
            for env in page:
                if key in (env.headers_json or b""):
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
