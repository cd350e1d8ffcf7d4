"""The ``Context`` a handler is given: who caused this message, and a unit of work to write through.

Everything a handler publishes, sends, appends or writes through its context is collected while it
runs and committed in one transaction when it returns — the outbox by construction. If the handler
raises (``Refused`` or anything else), nothing it collected is committed. A subscriber's context is
committed together with its checkpoint, so what it writes through ``ctx`` takes effect exactly once.
A document read through ``ctx`` is checked at the version it was read when the handler commits, so
a handler never overwrites a write it did not see (``DocumentConflict``: handle it again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar, overload

import msgspec

from tidings.committer import Committer
from tidings.errors import Refused
from tidings.factory import MessageFactory
from tidings.messages import Command, Envelope, Event, NewMessage, validate_stream
from tidings.records import ANY, AppendOp, DocumentWrite, Scheduled, Transaction
from tidings.repository import Repository, decode_document

S = TypeVar("S")
T = TypeVar("T")

_encoder = msgspec.json.Encoder()

#: The headers of a message that has none (read-only, shared).
NO_HEADERS: Mapping[str, str] = MappingProxyType({})

#: Document writes of a batch not yet committed, seen by the handlers that run after them in it:
#: the data (None: deleted) and the version the write will have (None when it is not known, a
#: write of a document the batch did not read).
Overlay = dict[tuple[str, str], tuple[bytes | None, int | None]]


@dataclass(frozen=True, slots=True)
class Services:
    """What units of work are built from: messages are made by ``factory``, streams and
    documents read through ``reader``, transactions committed through ``committer``."""

    factory: MessageFactory
    reader: Repository
    committer: Committer


def when(
    delay: float | timedelta | None, at: datetime | float | None
) -> tuple[float | None, float | None]:
    """``(at, delay)`` in epoch seconds / seconds from a ``delay`` or an ``at`` (not both)."""
    if delay is not None and at is not None:
        raise TypeError("give delay= or at=, not both")
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("at= must be an aware datetime (e.g. datetime.now(timezone.utc))")
        at = at.timestamp()
    return at, delay


def record(
    tx: Transaction,
    new: NewMessage,
    stream: str,
    delay: float | timedelta | None = None,
    at: datetime | float | None = None,
    expected_version: int = ANY,
) -> None:
    """Add ``new`` to ``tx``: appended to ``stream``, or scheduled for it when ``delay``/``at``
    is given."""
    if delay is None and at is None:
        append(tx, stream, [new], expected_version)
    else:
        due_at, due_in = when(delay, at)
        tx.scheduled.append(Scheduled(stream, new, due_at, due_in))


def append(tx: Transaction, stream: str, messages: list[NewMessage], expected_version: int) -> None:
    """Add an append to ``tx``; appends at any version to the stream of the last one join it."""
    appends = tx.appends
    if expected_version == ANY and appends:
        last = appends[-1]
        if last.stream == stream and last.expected_version == ANY:
            appends[-1] = AppendOp(stream, [*last.messages, *messages], ANY)
            return
    appends.append(AppendOp(stream, messages, expected_version))


class Context(msgspec.Struct, repr_omit_defaults=True):
    """What a handler knows about the message it handles, and where it writes.

    ``message_id`` is the id of the message being handled: use it to make side effects outside the
    store (an e-mail, a payment) idempotent. ``stream`` is the stream the message was recorded in
    (None for an invoked command, which is not recorded). ``headers`` are the message's
    (read-only). ``attempt`` is 1 on the first delivery of this message, then 2, 3… on retries.
    ``overlay`` holds the document writes of the handlers before this one in a worker's batch.
    """

    factory: MessageFactory
    reader: Repository
    message_id: str
    correlation_id: str
    causation_id: str | None = None
    headers: Mapping[str, str] = NO_HEADERS
    stream: str | None = None
    attempt: int = 1
    overlay: Overlay | None = None
    #: what this handler will commit (read-only use): None until it writes through the context
    writes: Transaction | None = None
    # Checks of the documents read before the first write: they open the transaction then.
    _checks: list[DocumentWrite] | None = None

    def __repr__(self) -> str:
        return (
            f"Context(message_id={self.message_id!r}, correlation_id={self.correlation_id!r}, "
            f"causation_id={self.causation_id!r}, stream={self.stream!r}, "
            f"attempt={self.attempt})"
        )

    def publish(
        self,
        event: Event,
        *,
        stream: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
    ) -> str:
        """Record ``event`` when this handler commits (or, with ``delay``/``at``, when due).
        Returns the new message's id."""
        if not isinstance(event, Event):
            raise TypeError(
                f"ctx.publish takes an Event, got {type(event).__name__}: a command is sent "
                "(ctx.send) so that exactly one handler carries it out"
            )
        new = self.factory.new(
            event, correlation_id=self.correlation_id, causation_id=self.message_id
        )
        target = new.type if stream is None else validate_stream(stream)
        record(self.transaction, new, target, delay, at)
        return new.id

    def send(
        self,
        command: Command,
        *,
        stream: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
    ) -> str:
        """Send ``command`` durably when this handler commits (or, with ``delay``/``at``, when due).
        Returns the new message's id, which its outcome is recorded under."""
        if not isinstance(command, Command):
            raise TypeError(
                f"ctx.send takes a Command, got {type(command).__name__}: an event is a fact "
                "and is published (ctx.publish) to every subscriber"
            )
        new, target, expected = self.factory.to_send(
            command, stream, correlation_id=self.correlation_id, causation_id=self.message_id
        )
        record(self.transaction, new, target, delay, at, expected)
        return new.id

    def append(
        self, stream: str, events: Iterable[Event], *, expected_version: int = ANY
    ) -> list[str]:
        """Append ``events`` to ``stream`` when this handler commits; with ``expected_version``
        the commit fails with ``WrongExpectedVersion`` unless the stream is at that version."""
        new = self.factory.events(events, self.correlation_id, self.message_id)
        append(self.transaction, validate_stream(stream), new, expected_version)
        return [m.id for m in new]

    async def load(
        self, stream: str, evolve: Callable[[S, Any], S], initial: S | Callable[[], S]
    ) -> tuple[S, int]:
        """Fold the stream's events into a state: ``(state, version)`` to decide on and append at."""
        return await self.reader.load(stream, evolve, initial)

    async def read_stream(self, stream: str, **kwargs: Any) -> list[Envelope]:
        """Read a stream (as :meth:`App.read_stream`)."""
        return await self.reader.read_stream(stream, **kwargs)

    # --- documents: read models written in the handler's transaction ---------------------------

    def put(self, collection: str, key: str, value: Any) -> None:
        """Write a JSON document (any msgspec-encodable value) when this handler commits."""
        self.transaction.documents.append(DocumentWrite(collection, key, _encoder.encode(value)))

    def delete(self, collection: str, key: str) -> None:
        """Delete a document when this handler commits."""
        self.transaction.documents.append(DocumentWrite(collection, key, None))

    @overload
    async def get(self, collection: str, key: str) -> Any: ...

    @overload
    async def get(self, collection: str, key: str, type: type[T]) -> T | None: ...

    async def get(self, collection: str, key: str, type: Any = Any) -> Any:
        """A document as this handler would see it after its own (and its batch's) writes.

        The version read is checked when the handler commits: if another handler wrote the
        document since, the commit fails with ``DocumentConflict`` (a worker handles the message
        again on fresh reads)."""
        for write in reversed(self.writes.documents if self.writes is not None else ()):
            if write.collection == collection and write.key == key and not write.check:
                return (
                    None
                    if write.data is None
                    else decode_document(collection, key, write.data, type)
                )
        pending = None if self.overlay is None else self.overlay.get((collection, key))
        if pending is not None:
            data, version = pending
            if version is not None:
                self._check(collection, key, version)
        else:
            found = await self.reader.document(collection, key)
            data = found.data
            self._check(collection, key, found.version)
        return None if data is None else decode_document(collection, key, data, type)

    @overload
    async def update(self, collection: str, key: str, fn: Callable[[Any], Any]) -> Any: ...

    @overload
    async def update(
        self, collection: str, key: str, fn: Callable[[T | None], T | None], type: type[T]
    ) -> T | None: ...

    async def update(
        self, collection: str, key: str, fn: Callable[[Any], Any], type: Any = Any
    ) -> Any:
        """Read a document, change it with ``fn`` and write it when this handler commits.

        ``fn`` gets the document (``None`` when there is none) and returns the new one, or
        ``None`` to delete it; returns what ``fn`` returned. Checked like :meth:`get`."""
        current = await self.get(collection, key, type)
        new = fn(current)
        if new is not None:
            self.put(collection, key, new)
        elif current is not None:
            self.delete(collection, key)
        return new

    def _check(self, collection: str, key: str, version: int) -> None:
        """Hold the commit to the document's being at ``version`` still."""
        check = DocumentWrite(collection, key, None, version, check=True)
        if self.writes is not None:
            self.writes.documents.append(check)
        elif self._checks is None:
            self._checks = [check]
        else:
            self._checks.append(check)

    def fresh(self) -> Context:
        """A new, empty unit of work for the same message."""
        return Context(
            self.factory,
            self.reader,
            self.message_id,
            self.correlation_id,
            self.causation_id,
            self.headers,
            self.stream,
            self.attempt,
        )

    @property
    def transaction(self) -> Transaction:
        """What this handler will commit (read-only use: tests and middleware)."""
        if self.writes is None:
            self.writes = Transaction(documents=self._checks or [])
            self._checks = None
        return self.writes


def recorded(refused: Refused) -> list[Event]:
    """The events a refusal records, checked to be events."""
    for event in refused.record:
        if not isinstance(event, Event):
            raise TypeError(
                f"Refused(record=...) takes the events the refusal records, got "
                f"{type(event).__name__}: a refusal records facts; a command is sent (ctx.send)"
            )
    return list(refused.record)


def refusal(ctx: Context, refused: Refused) -> Transaction | None:
    """What a handler's refusal commits: the events it records, in a unit of work of their own
    (what the handler wrote through ``ctx`` is dropped); None when it records nothing."""
    events = recorded(refused)
    if not events:
        return None
    unit = ctx.fresh()
    if refused.stream is not None:
        expected = ANY if refused.expected_version is None else refused.expected_version
        unit.append(refused.stream, events, expected_version=expected)
    else:
        for event in events:
            unit.publish(event)
    return unit.writes
