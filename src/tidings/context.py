"""The ``Context`` a handler is given: who caused this message, and a unit of work to write through.

Everything a handler publishes, sends, appends or writes through its context is collected while it
runs and committed in one transaction when it returns — the outbox by construction. If the handler
raises (``Refused`` or anything else), nothing it collected is committed. A subscriber's context is
committed together with its checkpoint, so what it writes through ``ctx`` takes effect exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

from tidings.messages import (
    Command,
    Event,
    Message,
    NewMessage,
    encode,
    uuid7,
    validate_stream,
)
from tidings.messages import _encoder as _message_encoder
from tidings.store import ANY, AppendOp, DocumentWrite, Scheduled, Transaction, grow

if TYPE_CHECKING:
    from tidings.app import App
    from tidings.messages import Envelope

S = TypeVar("S")
T = TypeVar("T")

_encoder = msgspec.json.Encoder()

#: The headers of a message that has none (read-only, shared).
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})

#: Pending document writes of a batch, visible to the handlers that run after them in it.
Overlay = dict[tuple[str, str], bytes | None]


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


def new_events(
    app: App,
    events: Iterable[Event],
    correlation_id: str,
    causation_id: str,
    first_id: str | None = None,
) -> list[NewMessage]:
    """``events`` encoded for an append, caused by ``causation_id``; ``first_id`` (made earlier)
    is the first one's id. (``app._new_message`` for each, written out for events of a class
    known here: a decided invoke's every event.)"""
    known = app._known
    new = []
    for event in events:
        meta = known.get(type(event))
        if meta is None or meta[0] != "event":
            if not isinstance(event, Event):
                raise TypeError(
                    f"ctx.append takes events, got {type(event).__name__}: send commands with "
                    "ctx.send"
                )
            new.append(app._new_message(event, correlation_id, causation_id, None, None, first_id))
        else:
            data = _message_encoder.encode(event)
            if len(data) > app.max_message_bytes:
                encode(event, app.max_message_bytes)  # raises MessageTooLarge, with advice
            new.append(
                NewMessage(
                    first_id or uuid7(),
                    "event",
                    meta[1],
                    meta[2],
                    data,
                    correlation_id,
                    causation_id,
                )
            )
        first_id = None
    return new


class Context(msgspec.Struct, repr_omit_defaults=True):
    """What a handler knows about the message it handles, and where it writes.

    ``message_id`` is the id of the message being handled: use it to make side effects outside the
    store (an e-mail, a payment) idempotent. ``stream`` is the stream the message was recorded in
    (an invoked command is not recorded: for a decider's, the stream it decides on, else None).
    ``headers`` are the message's (read-only). ``attempt`` is 1 on the first delivery of this
    message, then 2, 3… on retries.

    (A msgspec Struct, so that making one for every message costs little: the fields that start
    with an underscore are the framework's.)
    """

    app: App
    message_id: str
    correlation_id: str
    causation_id: str | None = None
    headers: Mapping[str, str] = _NO_HEADERS
    stream: str | None = None
    attempt: int = 1
    _overlay: Overlay | None = None
    # Made on first write: most handlers of a batch write little.
    _tx: Transaction | None = None
    #: run after this context's transaction committed (invoke only)
    _after: list[Callable[[], None]] | None = None
    #: an id made with the message's own, for the first message this handler records
    _spare_id: str | None = None
    #: what invoke decided already, on a decider's kept state: (stream, state, version, refusal)
    _decided: tuple[str, Any, int, Exception | None] | None = None

    def __repr__(self) -> str:
        return (
            f"Context(message_id={self.message_id!r}, correlation_id={self.correlation_id!r}, "
            f"causation_id={self.causation_id!r}, stream={self.stream!r}, "
            f"attempt={self.attempt})"
        )

    def _after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this handler's transaction has committed (for invoked commands;
        a sent command's handler commits with the worker, which does not call it)."""
        if self._after is None:
            self._after = []
        self._after.append(callback)

    def _new(self, message: Message) -> NewMessage:
        spare, self._spare_id = self._spare_id, None
        return self.app._new_message(
            message, self.correlation_id, self.message_id, None, None, spare
        )

    def _add(self, stream: str, messages: list[NewMessage], expected_version: int) -> None:
        if self._tx is None:
            # The first write makes the transaction, holding just this append.
            self._tx = Transaction([AppendOp(stream, messages, expected_version)])
            return
        appends = self._tx.appends
        if expected_version == ANY and appends:
            last = appends[-1]
            if last.stream == stream and last.expected_version == ANY:
                appends[-1] = AppendOp(stream, [*last.messages, *messages], ANY)
                return
        appends.append(AppendOp(stream, messages, expected_version))

    def _record(
        self,
        new: NewMessage,
        stream: str,
        delay: float | timedelta | None,
        at: datetime | float | None,
        expected_version: int = ANY,
    ) -> None:
        if delay is None and at is None:
            self._add(stream, [new], expected_version)
        else:
            due_at, due_in = when(delay, at)
            tx = self.transaction
            tx.scheduled = grow(tx.scheduled, Scheduled(stream, new, due_at, due_in))

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
        spare, self._spare_id = self._spare_id, None  # self._new(event), written out
        new = self.app._new_message(event, self.correlation_id, self.message_id, None, None, spare)
        if stream is None and delay is None and at is None:
            # The usual case, written out: a call more shows in an invoke's time.
            if self._tx is None:
                self._tx = Transaction([AppendOp(new.type, [new], ANY)])
            else:
                self._add(new.type, [new], ANY)
        else:
            self._record(new, new.type if stream is None else validate_stream(stream), delay, at)
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
        new = self._new(command)
        self.app._sent_types.add(type(command))
        if stream is None:
            # A stream of its own, named by the new id, and so new (as app.send).
            self._record(new, self.app._command_stream(new), delay, at, 0)
        else:
            self._record(new, validate_stream(stream), delay, at)
        return new.id

    def append(
        self, stream: str, events: Iterable[Event], *, expected_version: int = ANY
    ) -> list[str]:
        """Append ``events`` to ``stream`` when this handler commits; with ``expected_version``
        the commit fails with ``WrongExpectedVersion`` unless the stream is at that version."""
        return [m.id for m in self._append(stream, events, expected_version)]

    def _append(
        self, stream: str, events: Iterable[Event], expected_version: int
    ) -> list[NewMessage]:
        spare, self._spare_id = self._spare_id, None
        new = new_events(self.app, events, self.correlation_id, self.message_id, spare)
        if self._tx is None:  # _add's first case, written out: a decided invoke's every append
            self._tx = Transaction([AppendOp(validate_stream(stream), new, expected_version)])
        else:
            self._add(validate_stream(stream), new, expected_version)
        return new

    async def load(
        self, stream: str, evolve: Callable[[S, Any], S], initial: S | Callable[[], S]
    ) -> tuple[S, int]:
        """Fold the stream's events into a state: ``(state, version)`` to decide on and append at."""
        return await self.app.load(stream, evolve, initial)

    async def read_stream(self, stream: str, **kwargs: Any) -> list[Envelope]:
        """Read a stream (as :meth:`App.read_stream`)."""
        return await self.app.read_stream(stream, **kwargs)

    # --- documents: read models written in the handler's transaction ---------------------------

    def put(self, collection: str, key: str, value: Any) -> None:
        """Write a JSON document (any msgspec-encodable value) when this handler commits."""
        tx = self.transaction
        tx.documents = grow(tx.documents, DocumentWrite(collection, key, _encoder.encode(value)))

    def delete(self, collection: str, key: str) -> None:
        """Delete a document when this handler commits."""
        tx = self.transaction
        tx.documents = grow(tx.documents, DocumentWrite(collection, key, None))

    @overload
    async def get(self, collection: str, key: str) -> Any: ...

    @overload
    async def get(self, collection: str, key: str, type: type[T]) -> T | None: ...

    async def get(self, collection: str, key: str, type: Any = Any) -> Any:
        """A document as this handler would see it after its own (and its batch's) writes."""
        for write in reversed(self._tx.documents if self._tx is not None else ()):
            if write.collection == collection and write.key == key:
                return None if write.data is None else msgspec.json.decode(write.data, type=type)
        if self._overlay is not None and (collection, key) in self._overlay:
            data = self._overlay[(collection, key)]
            return None if data is None else msgspec.json.decode(data, type=type)
        return await self.app.get(collection, key, type)

    @property
    def transaction(self) -> Transaction:
        """What this handler will commit (read-only use: tests and middleware)."""
        if self._tx is None:
            self._tx = Transaction()
        return self._tx
