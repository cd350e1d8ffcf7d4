"""The ``Context`` a handler is given: who caused this message, and a unit of work to write through.

Everything a handler publishes, sends or appends through its context is collected while it runs and
committed in one transaction when it returns — the outbox by construction. If the handler raises
(``Refused`` or anything else), nothing it collected is committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from tidings.messages import Command, Event, Message, NewMessage, validate_stream
from tidings.store import ANY, AppendOp, Transaction

if TYPE_CHECKING:
    from tidings.app import App
    from tidings.messages import Envelope

S = TypeVar("S")


class Context:
    """What a handler knows about the message it handles, and where it writes.

    ``message_id`` is the id of the message being handled: use it to make side effects outside the
    store (an e-mail, a payment) idempotent.
    """

    __slots__ = ("_tx", "app", "causation_id", "correlation_id", "headers", "message_id", "stream")

    def __init__(
        self,
        app: App,
        *,
        message_id: str,
        correlation_id: str,
        causation_id: str | None = None,
        headers: dict[str, str] | None = None,
        stream: str | None = None,
    ) -> None:
        self.app = app
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.headers = headers or {}
        self.stream = stream
        self._tx = Transaction()

    def _new(self, message: Message) -> NewMessage:
        return self.app._new_message(
            message, correlation_id=self.correlation_id, causation_id=self.message_id
        )

    def _add(self, stream: str, messages: list[NewMessage], expected_version: int) -> None:
        appends = self._tx.appends
        if expected_version == ANY and appends:
            last = appends[-1]
            if last.stream == stream and last.expected_version == ANY:
                appends[-1] = AppendOp(stream, [*last.messages, *messages], ANY)
                return
        appends.append(AppendOp(stream, messages, expected_version))

    def publish(self, event: Event, *, stream: str | None = None) -> str:
        """Record ``event`` when this handler commits. Returns the new message's id."""
        if not isinstance(event, Event):
            raise TypeError(
                f"ctx.publish takes an Event, got {type(event).__name__}: a command is sent "
                "(ctx.send) so that exactly one handler carries it out"
            )
        new = self._new(event)
        self._add(
            validate_stream(stream) if stream is not None else type(event).__type_name__, [new], ANY
        )
        return new.id

    def send(self, command: Command, *, stream: str | None = None) -> str:
        """Send ``command`` durably when this handler commits. Returns the new message's id."""
        if not isinstance(command, Command):
            raise TypeError(
                f"ctx.send takes a Command, got {type(command).__name__}: an event is a fact "
                "and is published (ctx.publish) to every subscriber"
            )
        new = self._new(command)
        self.app._sent_types.add(type(command))
        self._add(
            validate_stream(stream) if stream is not None else self.app._command_stream(new),
            [new],
            ANY,
        )
        return new.id

    def append(
        self, stream: str, events: Iterable[Event], *, expected_version: int = ANY
    ) -> list[str]:
        """Append ``events`` to ``stream`` when this handler commits; with ``expected_version``
        the commit fails with ``WrongExpectedVersion`` unless the stream is at that version."""
        new = []
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(
                    f"ctx.append takes events, got {type(event).__name__}: send commands with ctx.send"
                )
            new.append(self._new(event))
        self._add(validate_stream(stream), new, expected_version)
        return [m.id for m in new]

    async def load(
        self, stream: str, evolve: Callable[[S, Any], S], initial: S | Callable[[], S]
    ) -> tuple[S, int]:
        """Fold the stream's events into a state: ``(state, version)`` to decide on and append at."""
        return await self.app.load(stream, evolve, initial)

    async def read_stream(self, stream: str, **kwargs: Any) -> list[Envelope]:
        """Read a stream (as :meth:`App.read_stream`)."""
        return await self.app.read_stream(stream, **kwargs)

    @property
    def transaction(self) -> Transaction:
        """What this handler will commit (read-only use: tests and middleware)."""
        return self._tx
