"""The ``App``: where messages and handlers are registered, and commands invoked, sent, and events published.

One App is one service. It is wired explicitly (``App("cinema", store="sqlite:///cinema.db")``) and
opens its store on first use or in ``async with app:``; nothing happens at import.
"""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union, overload

import msgspec

from tidings.context import Context
from tidings.decider import Decider
from tidings.errors import (
    ConfigurationError,
    DuplicateHandler,
    HandlerNotFound,
    WrongExpectedVersion,
)
from tidings.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Command,
    Envelope,
    Event,
    Message,
    NewMessage,
    TypeRegistry,
    Upcaster,
    encode,
    encode_headers,
    uuid7,
    validate_stream,
    validate_subscription_name,
)
from tidings.store import ANY, Appended, AppendOp, Store, Transaction, open_store

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class CommandHandler:
    """The one handler of a command type."""

    command: type[Command]
    fn: Callable[[Any, Context], Any]
    is_async: bool
    #: how many times to re-run the handler after ``WrongExpectedVersion``
    retry_on_conflict: int = 0
    #: when set, handlers for the same stream run one at a time in this process
    lock_stream: Callable[[Any], str] | None = None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A named, durable subscriber to one or more event types."""

    name: str
    events: tuple[type[Event], ...]
    fn: Callable[[Any, Context], Any]
    is_async: bool


@dataclass(frozen=True, slots=True)
class Problem:
    """A mistake in the application's wiring, found by :meth:`App.validate`."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ticket:
    """The receipt for a sent command: its id and where it was recorded."""

    message_id: str
    stream: str
    global_position: int


@dataclass
class _StreamLocks:
    locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)

    async def acquire(self, key: str) -> asyncio.Lock:
        lock, users = self.locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self.locks[key] = (lock, users + 1)
        await lock.acquire()
        return lock

    def release(self, key: str, lock: asyncio.Lock) -> None:
        lock.release()
        _, users = self.locks[key]
        if users <= 1:
            del self.locks[key]
        else:
            self.locks[key] = (lock, users - 1)


def _message_types(fn: Callable[..., Any], role: str) -> tuple[type[Message], ...]:
    """The message classes named by the annotation of ``fn``'s first parameter."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise ConfigurationError(
            f"{role} {fn.__qualname__} takes no parameters: write it as (message, ctx)"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot read the annotations of {fn.__qualname__}: {exc}"
        ) from exc
    hint = hints.get(params[0].name)
    if hint is None:
        raise ConfigurationError(
            f"{role} {fn.__qualname__}: annotate its first parameter with the message class it "
            "handles, e.g. (cmd: ReserveSeat, ctx: Context)"
        )
    if typing.get_origin(hint) in (Union, types.UnionType):
        found = typing.get_args(hint)
    else:
        found = (hint,)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise ConfigurationError(
                f"{role} {fn.__qualname__}: {cls!r} is not a Command or Event class"
            )
    return found


class App:
    """A service: its message types, its handlers, and its store.

    ``store`` is a URL (``memory://``, ``sqlite:///app.db``) or a :class:`~tidings.store.Store`.
    """

    def __init__(
        self,
        name: str,
        store: str | Store = "memory://",
        *,
        messages: Iterable[type[Message]] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.name = validate_subscription_name(name)
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.registry = TypeRegistry()
        self.max_message_bytes = max_message_bytes
        self._known: set[type[Message]] = set()
        self._commands: dict[type[Command], CommandHandler] = {}
        self._subscribers: dict[str, Subscriber] = {}
        self._sent_types: set[type[Command]] = set()
        self._locks = _StreamLocks()
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        for cls in messages:
            self.register(cls)

    # --- life cycle ---------------------------------------------------------------------------

    async def open(self) -> App:
        """Open the store (connect, migrate). Called by itself on first use."""
        if self._opened:
            return self
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.store.open()
                self._opened = True
        return self

    async def close(self) -> None:
        """Close the store."""
        if self._opened:
            self._opened = False
            await self.store.close()

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- registration -------------------------------------------------------------------------

    def register(self, *classes: type[Message]) -> None:
        """Make message classes known (for decoding, validation and the advisor)."""
        for cls in classes:
            self.registry.register(cls)
            self._known.add(cls)

    def _ensure_known(self, cls: type[Message]) -> None:
        if cls not in self._known:
            self.register(cls)

    @overload
    def command(self, fn: F) -> F: ...

    @overload
    def command(self, *, retry_on_conflict: int = 0) -> Callable[[F], F]: ...

    def command(self, fn: F | None = None, *, retry_on_conflict: int = 0) -> F | Callable[[F], F]:
        """Register the one handler of a command type (read from its first parameter's annotation).

        A second handler for the same type raises ``DuplicateHandler``. ``retry_on_conflict``
        re-runs the handler that many times when its appends meet ``WrongExpectedVersion``.
        """

        def decorate(fn: F) -> F:
            found = _message_types(fn, "command handler")
            for cls in found:
                if not issubclass(cls, Command):
                    raise ConfigurationError(
                        f"{fn.__qualname__} handles {cls.__name__}, which is an Event: events go to "
                        f"subscribers, register it with @app.subscriber('a-name')"
                    )
                self._add_command_handler(
                    CommandHandler(cls, fn, inspect.iscoroutinefunction(fn), retry_on_conflict)
                )
            return fn

        return decorate(fn) if fn is not None else decorate

    def _add_command_handler(self, handler: CommandHandler) -> None:
        existing = self._commands.get(handler.command)
        if existing is not None:
            raise DuplicateHandler(
                f"{handler.command.__name__} already has a handler ({existing.name}); a command has "
                f"exactly one recipient. If {handler.name} should react to what happened, make it "
                "a subscriber to the event the first handler publishes"
            )
        self.register(handler.command)
        self._commands[handler.command] = handler

    def subscriber(self, name: str) -> Callable[[F], F]:
        """Register a durable, named subscriber for the event type(s) of its first parameter.

        Any number of subscribers may take the same event type; each sees every event.
        """
        validate_subscription_name(name)

        def decorate(fn: F) -> F:
            found = _message_types(fn, "subscriber")
            for cls in found:
                if issubclass(cls, Command):
                    raise ConfigurationError(
                        f"subscriber {name!r} takes {cls.__name__}, which is a Command: a command has "
                        f"exactly one handler, register it with @app.command"
                    )
            if name in self._subscribers:
                raise ConfigurationError(
                    f"a subscriber named {name!r} already exists ({self._subscribers[name].fn.__qualname__}); "
                    "each subscriber needs its own name, which keys its checkpoint"
                )
            self.register(*found)
            events = tuple(cls for cls in found if issubclass(cls, Event))
            self._subscribers[name] = Subscriber(name, events, fn, inspect.iscoroutinefunction(fn))
            return fn

        return decorate

    def decider(
        self, decider: Decider[S], *commands: type[Command], retry_on_conflict: int = 5
    ) -> Decider[S]:
        """Handle ``commands`` with a :class:`Decider`: load its stream, decide, append at the
        version loaded. In this process, commands for one stream take turns; a conflict with
        another process is retried ``retry_on_conflict`` times."""
        if not commands:
            raise ConfigurationError(
                "app.decider(decider, *commands): name the command types it decides"
            )

        async def handle(command: Command, ctx: Context) -> list[Event]:
            stream = decider.stream(command)
            state, version = await ctx.load(stream, decider.evolve, decider.initial)
            events = list(decider.decide(command, state))
            if events:
                ctx.append(stream, events, expected_version=version)
            return events

        handle.__qualname__ = f"Decider({getattr(decider.decide, '__qualname__', 'decide')})"
        for cls in commands:
            if not (isinstance(cls, type) and issubclass(cls, Command)):
                raise ConfigurationError(f"app.decider: {cls!r} is not a Command class")
            self._add_command_handler(
                CommandHandler(cls, handle, True, retry_on_conflict, decider.stream)
            )
        return decider

    def upcaster(self, type_name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning a stored payload (a dict) of ``from_version`` into the next."""

        def decorate(fn: Upcaster) -> Upcaster:
            self.registry.add_upcaster(type_name, from_version, fn)
            return fn

        return decorate

    @property
    def command_handlers(self) -> dict[type[Command], CommandHandler]:
        """The registered command handlers by command type."""
        return dict(self._commands)

    @property
    def subscribers(self) -> dict[str, Subscriber]:
        """The registered subscribers by name."""
        return dict(self._subscribers)

    def validate(self) -> list[Problem]:
        """Mistakes in the wiring that would otherwise surface only in production."""
        problems = []
        for cls in sorted(self._known | self._sent_types, key=lambda c: c.__type_name__):
            if issubclass(cls, Command) and cls not in self._commands:
                problems.append(
                    Problem(
                        "command-without-handler",
                        f"command {cls.__type_name__} has no handler: register one with "
                        "@app.command, or it will wait forever when sent",
                    )
                )
        return problems

    # --- messages -----------------------------------------------------------------------------

    def _new_message(
        self,
        message: Message,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> NewMessage:
        cls = type(message)
        if cls not in self._known:
            self.register(cls)
        message_id = uuid7()
        return NewMessage(
            message_id,
            cls.__kind__,
            cls.__type_name__,
            cls.__version__,
            encode(message, self.max_message_bytes),
            correlation_id or message_id,
            causation_id,
            encode_headers(headers),
        )

    @staticmethod
    def _command_stream(new: NewMessage) -> str:
        # A sent command without a stream is its own stream: sent commands run in parallel unless
        # the sender names a stream to order them by.
        return f"{new.type}-{new.id}"

    def decode(self, envelope: Envelope) -> Envelope:
        """The envelope with its ``message`` decoded (raises ``MessageDecodeError``)."""
        return (
            envelope
            if envelope.message is not None
            else _with_message(envelope, self.registry.decode(envelope))
        )

    # --- invoke, send, publish ----------------------------------------------------------------

    async def invoke(
        self,
        command: Command,
        *,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Run the command's handler now and return its result.

        Raises ``Refused`` when the handler refuses; then, as with any other exception, nothing
        the handler did is committed.
        """
        handler = self._commands.get(type(command))
        if handler is None:
            if isinstance(command, Event):
                raise TypeError(
                    f"{type(command).__name__} is an Event: events are published (app.publish), "
                    "not invoked"
                )
            raise HandlerNotFound(
                f"no handler for {type(command).__name__}: register one with @app.command"
            )
        if not self._opened:
            await self.open()
        message_id = uuid7()
        if handler.lock_stream is None:
            return await self._run_command(handler, command, message_id, correlation_id, headers)
        key = handler.lock_stream(command)
        lock = await self._locks.acquire(key)
        try:
            return await self._run_command(handler, command, message_id, correlation_id, headers)
        finally:
            self._locks.release(key, lock)

    async def _run_command(
        self,
        handler: CommandHandler,
        command: Command,
        message_id: str,
        correlation_id: str | None,
        headers: dict[str, str] | None,
    ) -> Any:
        attempt = 0
        while True:
            ctx = Context(
                self,
                message_id=message_id,
                correlation_id=correlation_id or message_id,
                headers=headers,
            )
            result = handler.fn(command, ctx)
            if handler.is_async:
                result = await result
            tx = ctx._tx
            if not tx.appends:
                return result
            try:
                await self.store.commit(tx)
            except WrongExpectedVersion:
                if attempt >= handler.retry_on_conflict:
                    raise
                attempt += 1
                continue
            return result

    async def send(
        self,
        command: Command,
        *,
        stream: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Ticket:
        """Record ``command`` durably for its one handler to carry out later."""
        if not isinstance(command, Command):
            raise TypeError(
                f"{type(command).__name__} is not a Command: events are published with "
                "app.publish, so that every subscriber sees them"
            )
        new = self._new_message(command, correlation_id=correlation_id, headers=headers)
        self._sent_types.add(type(command))
        target = validate_stream(stream) if stream is not None else self._command_stream(new)
        (done,) = await self._commit_one(AppendOp(target, [new], ANY))
        return Ticket(new.id, target, done.global_position)

    async def publish(
        self,
        event: Event,
        *,
        stream: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Appended:
        """Record ``event`` durably for every subscriber (default stream: the event's type name)."""
        if not isinstance(event, Event):
            raise TypeError(
                f"{type(event).__name__} is a Command, not an Event: a command has one recipient — "
                "use app.send (durable, later) or app.invoke (now, with its result)"
            )
        new = self._new_message(event, correlation_id=correlation_id, headers=headers)
        target = validate_stream(stream) if stream is not None else new.type
        (done,) = await self._commit_one(AppendOp(target, [new], ANY))
        return done

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int = ANY,
        correlation_id: str | None = None,
    ) -> Appended:
        """Append events to a stream atomically, optionally at an expected version."""
        new = []
        for event in events:
            if not isinstance(event, Event):
                raise TypeError(
                    f"app.append takes events, got {type(event).__name__}: send commands with app.send"
                )
            new.append(self._new_message(event, correlation_id=correlation_id))
        (done,) = await self._commit_one(AppendOp(validate_stream(stream), new, expected_version))
        return done

    async def _commit_one(self, op: AppendOp) -> list[Appended]:
        if not self._opened:
            await self.open()
        return await self.store.commit(Transaction([op]))

    # --- reading ------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """A stream's messages, decoded, forwards (default) or backwards."""
        if not self._opened:
            await self.open()
        found = await self.store.read_stream(
            stream, from_position=from_position, backwards=backwards, limit=limit
        )
        return [self.decode(env) for env in found]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[type[Message] | str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        """Messages in global order after a global position, decoded, optionally only of ``types``."""
        if not self._opened:
            await self.open()
        names = None
        if types is not None:
            names = [t if isinstance(t, str) else t.__type_name__ for t in types]
        found = await self.store.read_all(after=after, types=names, limit=limit)
        return [self.decode(env) for env in found]

    async def load(
        self, stream: str, evolve: Callable[[S, Any], S], initial: S | Callable[[], S]
    ) -> tuple[S, int]:
        """Fold a stream's events with ``evolve`` from ``initial``: returns ``(state, version)``."""
        if not self._opened:
            await self.open()
        state = initial() if callable(initial) else initial
        version = 0
        page = 1000
        while True:
            found = await self.store.read_stream(stream, from_position=version + 1, limit=page)
            for env in found:
                state = evolve(state, self.registry.decode(env))
                version = env.stream_position
            if len(found) < page:
                return state, version


def _with_message(envelope: Envelope, message: Message) -> Envelope:
    return msgspec.structs.replace(envelope, message=message)
