"""The ``App``: the facade where handlers are registered and messages invoked, sent and published.

One App is one service. It is wired explicitly (``App("cinema", store="sqlite:///cinema.db")``) and
opens its store on first use or in ``async with app:``; nothing happens at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from tidings.actions import OperatorActions
from tidings.backends import open_store
from tidings.committer import Committer
from tidings.context import Services, record
from tidings.delivery.alerts import Alerts
from tidings.delivery.deadletters import DeadLetters
from tidings.delivery.observer import Observer
from tidings.delivery.subscriptions import Subscriptions, Unhandled
from tidings.delivery.worker import Worker
from tidings.dependencies import Dependencies
from tidings.errors import ConfigurationError
from tidings.factory import MessageFactory
from tidings.lifecycle import Lifecycle
from tidings.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Command,
    Envelope,
    Event,
    Message,
    NewMessage,
    TypeRegistry,
    validate_stream,
    validate_subscription_name,
)
from tidings.records import ANY, FINAL, PENDING, Appended, AppendOp, Outcome, Transaction
from tidings.registration import Registration
from tidings.registry import Handlers
from tidings.repository import Repository
from tidings.store import Store
from tidings.ticket import Ticket
from tidings.transports import Broker, Link, Routes

S = TypeVar("S")
T = TypeVar("T")

#: the context a send or publish runs in when nobody watches
_UNWATCHED: AbstractContextManager[object] = nullcontext()


class App(Registration):
    """A service: its message types, its handlers, and its store.

    ``store`` is a URL (``memory://``, ``sqlite:///app.db``) or a :class:`~tidings.store.Store`.
    The work is done by its collaborators: ``factory`` makes messages, ``handlers`` holds what is
    registered (by the methods of :class:`~tidings.registration.Registration`), ``reader`` reads
    the log and documents, ``committer`` commits and wakes.
    ``dependencies`` are what handlers are given by the type their parameters name
    (``App(..., dependencies={Notifications: EmailNotifications()})``, see docs/dependencies.md).
    """

    def __init__(
        self,
        name: str,
        store: str | Store = "memory://",
        *,
        messages: Iterable[type[Message]] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        dependencies: Mapping[Any, object] | None = None,
    ) -> None:
        self.name = validate_subscription_name(name)
        self.registry = TypeRegistry()
        self.factory = MessageFactory(self.registry, max_message_bytes)
        self.dependencies = Dependencies(dependencies)
        self.handlers = Handlers(self.factory, self.dependencies)
        self.alerts = Alerts()
        #: told of invokes, sends, publishes and deliveries (``tidings.ops.instrument``)
        self.observer: Observer | None = None
        self.operator_actions = OperatorActions()
        self._life = Lifecycle(f"App {self.name!r}")
        self.store = open_store(store) if isinstance(store, str) else store
        #: the brokers this App is connected to (:meth:`connect`)
        self.links: list[Link] = []
        self.register(*messages)

    @property
    def store(self) -> Store:
        """The store everything is recorded in."""
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        """Replace the store (a closed App only): the reader and committer are rebuilt over it,
        and what deciders kept of streams' states is dropped (it was read from the old one)."""
        if self._life.opened:
            raise ConfigurationError(
                f"App {self.name!r} is open on its store: close it (or leave `async with app:`) "
                "before giving it another"
            )
        self._store = store
        self.handlers.forget_states()
        self.reader = Repository(store, self.registry)
        self.committer = Committer(store)
        self.services = Services(self.factory, self.reader, self.committer)

    # --- life cycle ---------------------------------------------------------------------------

    async def open(self) -> App:
        """Open the store (connect, migrate). Called by itself on first use.

        From its opening to its closing an App belongs to the event loop that opened it: used
        from another loop (another thread's, or a later ``asyncio.run``) it raises ``StoreError``
        at once."""
        await self._life.open(self.store)
        return self

    async def close(self) -> None:
        """Close the store; the App may then be opened again, in any event loop."""
        await self._life.close(self.store)

    @property
    def is_open(self) -> bool:
        """Whether the store is open (between ``open()`` and ``close()``)."""
        return self._life.opened

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- brokers, workers, operators ----------------------------------------------------------

    def connect(self, broker: str | Broker, routes: Routes, **options: Any) -> Link:
        """Connect to a broker (``amqp://…``) by ``routes``: the worker then relays this App's
        routed messages to it and records what arrives for this App (see docs/transports.md)."""
        link = Link(self, broker, routes, **options)
        self.links.append(link)
        return link

    def worker(self, **options: Any) -> Worker:
        """A worker for this app's subscriptions and sent commands (see :class:`Worker`), and
        the relay and inbox of every broker it is connected to."""
        options.setdefault("companions", self.links)
        options.setdefault("observer", self.observer)
        return Worker(
            self.store, self.handlers, self.services, self.alerts, ready=self.open, **options
        )

    async def run_worker(self, **options: Any) -> None:
        """Run a worker in this process until cancelled or until SIGTERM/SIGINT (when installed)."""
        await self.worker(**options).run()

    @property
    def dead_letters(self) -> DeadLetters:
        """List, show, retry and skip what subscriptions hold back."""
        return DeadLetters(self.committer, self.open)

    @property
    def subscriptions(self) -> Subscriptions:
        """List subscriptions with their lag, reset and delete them, see what nothing handles."""
        return Subscriptions(self.store, self.handlers, self.services, self.open)

    async def unhandled(self) -> list[Unhandled]:
        """What the log holds that nothing in this App handles: sent commands without a handler,
        types no class knows (a worker logs these as warnings when it starts)."""
        return await self.subscriptions.unhandled()

    def decode(self, envelope: Envelope) -> Envelope:
        """The envelope with its ``message`` decoded (raises ``MessageDecodeError``)."""
        return self.reader.decode(envelope)

    def result(self, outcome: Outcome) -> Any:
        """A succeeded outcome's result as its handler's declared return type (plain JSON values
        when it declares none, or its command type has no handler in this App)."""
        if outcome.result is None:
            return None
        handler = self.handlers.handler_named(outcome.type)
        if handler is None:
            return outcome.value()
        return handler.decode_result(outcome.result)

    # --- invoke, send, publish, append --------------------------------------------------------

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
        handler = self.handlers.handler_of(command)
        if not self._life.ready():
            await self.open()
        if self.observer is None:
            return await handler.invoke(command, self.services, correlation_id, headers)
        return await self.observer.invoke(
            handler,
            command,
            lambda: handler.invoke(command, self.services, correlation_id, headers),
        )

    async def send(
        self,
        command: Command,
        *,
        stream: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
        id: str | None = None,
    ) -> Ticket:
        """Record ``command`` durably for its one handler to carry out later (at once, or after
        ``delay`` seconds / at ``at``, on the store's clock). ``await ticket.outcome()`` tells
        what became of it.

        ``id`` names the message (default: a new UUIDv7). Sending again with the same id — after
        a timeout, say — records nothing new and returns the first send's ticket: the command is
        carried out once. (The content of a repeat is not compared: the id is the message.)"""
        if not isinstance(command, Command):
            raise TypeError(
                f"{type(command).__name__} is not a Command: events are published with "
                "app.publish, so that every subscriber sees them"
            )
        with self._recording("send", command):
            new, target, expected = self.factory.to_send(
                command, stream, correlation_id=correlation_id, headers=headers, id=id
            )
            await self._record(new, target, delay, at, expected)
        return Ticket(self, new.id, target)

    async def publish(
        self,
        event: Event,
        *,
        stream: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | float | None = None,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
        id: str | None = None,
    ) -> str:
        """Record ``event`` durably for every subscriber (default stream: the event's type name),
        now or when due (``delay``/``at``). Returns the event's id.

        ``id`` names the event (default: a new UUIDv7); publishing again with an id that is in the
        log already records nothing: every subscriber sees it once."""
        if not isinstance(event, Event):
            raise TypeError(
                f"{type(event).__name__} is a Command, not an Event: a command has one recipient — "
                "use app.send (durable, later) or app.invoke (now, with its result)"
            )
        with self._recording("publish", event):
            new = self.factory.new(event, correlation_id=correlation_id, headers=headers, id=id)
            target = validate_stream(stream) if stream is not None else new.type
            await self._record(new, target, delay, at)
        return new.id

    def _recording(self, verb: str, message: Message) -> AbstractContextManager[object]:
        """The observer's context around a send or publish, if anyone watches."""
        return _UNWATCHED if self.observer is None else self.observer.recording(verb, message)

    async def _record(
        self,
        new: NewMessage,
        stream: str,
        delay: float | timedelta | None,
        at: datetime | float | None,
        expected_version: int = ANY,
    ) -> None:
        tx = Transaction()
        record(tx, new, stream, delay, at, expected_version)
        if not self._life.ready():
            await self.open()
        await self.committer.commit(tx)

    async def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int = ANY,
        correlation_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> Appended:
        """Append events to a stream atomically, optionally at an expected version.

        ``ids`` names the events (default: new UUIDv7s). Appending again with ids that are all in
        the log already records nothing and returns where they are — a writer unsure whether its
        append went through can append again. (Their content is not compared.)"""
        new = self.factory.events(events, correlation_id, None, ids=ids, via="app")
        tx = Transaction([AppendOp(validate_stream(stream), new, expected_version)])
        if not self._life.ready():
            await self.open()
        (done,) = await self.committer.commit(tx)
        return done

    # --- positions: waiting for a read model ---------------------------------------------------

    @property
    def last_position(self) -> int:
        """The global position of the last message committed through this App (by ``invoke``,
        ``send``, ``publish``, ``append``, or a worker of it; 0 before any): what a read model
        must reach to show it (:meth:`caught_up`)."""
        return self.committer.position

    async def position(self) -> int:
        """The global position of the log's last message (0 while it is empty)."""
        await self.open()
        return await self.store.last_position()

    async def caught_up(
        self, subscription: str, position: int | None = None, *, timeout: float = 10.0
    ) -> None:
        """Wait until ``subscription`` has handled every message of its types up to ``position``
        (default: :attr:`last_position`, what this App last committed): then a read model it
        writes shows them. Raises ``NotCaughtUp`` (a ``TimeoutError``) after ``timeout``
        seconds, saying how far it got."""
        await self.open()
        target = self.committer.position if position is None else position
        await self.subscriptions.caught_up(subscription, target, timeout)

    # --- outcomes, documents and reading ------------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome:
        """What became of a sent command so far (status ``pending`` until first handled)."""
        await self.open()
        found = await self.store.outcome(message_id)
        return found if found is not None else Outcome(message_id, "", PENDING)

    async def wait_outcome(self, message_id: str, timeout: float | None = None) -> Outcome:
        """Wait up to ``timeout`` seconds for a sent command's final outcome, then return the
        latest known. Woken at once by a worker in this process; polls for one in another."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        poll = 0.005
        while True:
            outcome = await self.outcome(message_id)
            if outcome.status in FINAL:
                return outcome
            wait = poll if deadline is None else min(poll, deadline - loop.time())
            if wait <= 0:
                return outcome
            await self.committer.outcome_committed(message_id, wait)
            poll = min(poll * 2, 0.25)

    @overload
    async def get(self, collection: str, key: str) -> Any: ...

    @overload
    async def get(self, collection: str, key: str, type: type[T]) -> T | None: ...

    async def get(self, collection: str, key: str, type: Any = Any) -> Any:
        """A document written by a handler through ``ctx.put`` (``None`` if there is none)."""
        await self.open()
        return await self.reader.get(collection, key, type)

    async def documents(self, collection: str, *, limit: int = 1000) -> dict[str, Any]:
        """A collection's documents by key."""
        await self.open()
        return await self.reader.documents(collection, limit=limit)

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """A stream's messages, decoded, forwards (default) or backwards."""
        await self.open()
        return await self.reader.read_stream(
            stream, from_position=from_position, backwards=backwards, limit=limit
        )

    async def streams(
        self, *, prefix: str = "", limit: int = 100, internal: bool = False
    ) -> list[tuple[str, int]]:
        """Stream names with their versions, by name: the application's own; with ``internal``,
        the framework's (``$``) streams too (workflow instances, sent commands, failures)."""
        await self.open()
        return await self.store.streams(prefix=prefix, limit=limit, internal=internal)

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[type[Message] | str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        """Messages in global order after a global position, decoded, optionally only of ``types``."""
        await self.open()
        return await self.reader.read_all(after=after, types=types, limit=limit)

    async def load(
        self, stream: str, evolve: Callable[[S, Any], S], initial: S | Callable[[], S]
    ) -> tuple[S, int]:
        """Fold a stream's events with ``evolve`` from ``initial``: returns ``(state, version)``."""
        await self.open()
        return await self.reader.load(stream, evolve, initial)
