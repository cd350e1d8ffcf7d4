"""The ``App``: where messages and handlers are registered, and commands invoked, sent, and events published.

One App is one service. It is wired explicitly (``App("cinema", store="sqlite:///cinema.db")``) and
opens its store on first use or in ``async with app:``; nothing happens at import.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from types import CoroutineType as Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

from tidings.backends import open_store
from tidings.context import Context, new_events, when
from tidings.decider import Decider, StreamStates
from tidings.delivery.alerts import AlertCallback, Alerts
from tidings.delivery.policy import RetryPolicy
from tidings.errors import (
    CommandDead,
    ConfigurationError,
    DuplicateHandler,
    HandlerNotFound,
    Refused,
    WrongExpectedVersion,
)
from tidings.handlers import CommandHandler, Problem, StreamTurns, Subscriber, message_types
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
    uuid7_pair,
    validate_message_id,
    validate_stream,
    validate_subscription_name,
)
from tidings.messages import _encoder as _message_encoder
from tidings.store import (
    ANY,
    DEAD,
    FINAL,
    PENDING,
    REFUSED,
    SUCCEEDED,
    Appended,
    AppendOp,
    Outcome,
    Scheduled,
    Store,
    Transaction,
)

if TYPE_CHECKING:
    from tidings.delivery.deadletters import DeadLetters
    from tidings.delivery.worker import Worker
    from tidings.workflow import Workflow

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ticket:
    """The receipt for a sent command: its id, and the way to its outcome."""

    app: App
    message_id: str
    stream: str

    async def outcome(self, timeout: float | None = None) -> Outcome:
        """Wait up to ``timeout`` seconds for the command's final outcome (``succeeded``,
        ``refused`` or ``dead``); after that, the latest known (``failed`` while it is being
        retried, ``pending`` before it was first handled)."""
        return await self.app.wait_outcome(self.message_id, timeout)

    async def result(self, timeout: float | None = None) -> Any:
        """The handler's result (JSON-decoded); raises ``Refused`` if it refused, ``CommandDead``
        if it was given up on, ``TimeoutError`` if it has not ended within ``timeout``."""
        outcome = await self.outcome(timeout)
        if outcome.status == SUCCEEDED:
            return outcome.value()
        if outcome.status == REFUSED:
            raise Refused(outcome.reason or "refused", code=outcome.code)
        if outcome.status == DEAD:
            raise CommandDead(
                f"command {self.message_id} is dead after {outcome.attempts} attempt(s): {outcome.error}; "
                "see `tidings dlq list`"
            )
        raise TimeoutError(
            f"command {self.message_id} has not ended within {timeout}s (status {outcome.status}"
            f", {outcome.attempts} attempt(s)); is a worker running?"
        )


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
        self._commit_now, self._append_now = _commits_now_of(self.store)
        self.registry = TypeRegistry()
        self.max_message_bytes = max_message_bytes
        #: message classes known here, with what an envelope says of each: kind, type, version
        self._known: dict[type[Message], tuple[str, str, int]] = {}
        self._commands: dict[type[Command], CommandHandler] = {}
        self._subscribers: dict[str, Subscriber] = {}
        self._sent_types: set[type[Command]] = set()
        self._locks = StreamTurns()
        self._wakeups: set[asyncio.Event] = set()
        self._outcome_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.alerts = Alerts()
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
                self._commit_now, self._append_now = _commits_now_of(self.store)
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
            self._known[cls] = (cls.__kind__, cls.__type_name__, cls.__version__)

    def _ensure_known(self, cls: type[Message]) -> None:
        if cls not in self._known:
            self.register(cls)

    @overload
    def command(self, fn: F) -> F: ...

    @overload
    def command(
        self, *, retry_on_conflict: int = 0, policy: RetryPolicy | None = None
    ) -> Callable[[F], F]: ...

    def command(
        self,
        fn: F | None = None,
        *,
        retry_on_conflict: int = 0,
        policy: RetryPolicy | None = None,
    ) -> F | Callable[[F], F]:
        """Register the one handler of a command type (read from its first parameter's annotation).

        A second handler for the same type raises ``DuplicateHandler``. ``retry_on_conflict``
        re-runs the handler that many times when its appends meet ``WrongExpectedVersion``;
        ``policy`` says how a *sent* command that fails is retried and when it is given up.
        """

        def decorate(fn: F) -> F:
            found = message_types(fn, "command handler")
            for cls in found:
                if not issubclass(cls, Command):
                    raise ConfigurationError(
                        f"{fn.__qualname__} handles {cls.__name__}, which is an Event: events go to "
                        f"subscribers, register it with @app.subscriber('a-name')"
                    )
                self._add_command_handler(
                    CommandHandler(
                        cls,
                        fn,
                        inspect.iscoroutinefunction(fn),
                        retry_on_conflict,
                        policy=policy or RetryPolicy(),
                    )
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

    def subscriber(
        self,
        name: str,
        *,
        policy: RetryPolicy | None = None,
        start: str = "beginning",
        partitions: int = 8,
    ) -> Callable[[F], F]:
        """Register a durable, named subscriber for the event type(s) of its first parameter.

        Any number of subscribers may take the same event type; each sees every event, in order
        per stream, at least once. ``start`` is where a new subscription begins: ``"beginning"``
        (catch up on every recorded event) or ``"now"``. ``partitions`` splits it by stream so
        that several workers can share it (fixed once the subscription exists).
        """
        validate_subscription_name(name)
        if start not in ("beginning", "now"):
            raise ConfigurationError(f"start={start!r}: use 'beginning' or 'now'")
        if not 1 <= partitions <= 1024:
            raise ConfigurationError(f"partitions={partitions}: use 1 to 1024")

        def decorate(fn: F) -> F:
            found = message_types(fn, "subscriber")
            for cls in found:
                if issubclass(cls, Command):
                    raise ConfigurationError(
                        f"subscriber {name!r} takes {cls.__name__}, which is a Command: a command has "
                        f"exactly one handler, register it with @app.command"
                    )
            events = tuple(cls for cls in found if issubclass(cls, Event))
            self._add_subscriber(
                Subscriber(
                    name,
                    events,
                    fn,
                    inspect.iscoroutinefunction(fn),
                    policy or RetryPolicy(),
                    start,
                    partitions,
                )
            )
            return fn

        return decorate

    def _add_subscriber(self, subscriber: Subscriber) -> None:
        existing = self._subscribers.get(subscriber.name)
        if existing is not None:
            raise ConfigurationError(
                f"a subscriber named {subscriber.name!r} already exists ({existing.fn.__qualname__}); "
                "each subscriber needs its own name, which keys its checkpoint"
            )
        self.register(*subscriber.events)
        self._subscribers[subscriber.name] = subscriber

    def workflow(
        self, workflow: Workflow[Any], *, policy: RetryPolicy | None = None
    ) -> Workflow[Any]:
        """Run a :class:`~tidings.workflow.Workflow`: its steps are delivered like a subscriber's
        (subscription ``workflow:<name>``), from the beginning of the log."""
        from tidings.workflow import WorkflowTimeout

        events: tuple[type[Event], ...] = tuple(workflow.handlers)
        if workflow.timeouts:
            events += (WorkflowTimeout,)
        if not events:
            raise ConfigurationError(
                f"workflow {workflow.name!r} reacts to nothing: add @{workflow.name}.on(Event)"
            )
        self._add_subscriber(
            Subscriber(
                f"workflow:{workflow.name}", events, workflow.react, True, policy or RetryPolicy()
            )
        )
        return workflow

    def decider(
        self,
        decider: Decider[S],
        *commands: type[Command],
        retry_on_conflict: int = 5,
        policy: RetryPolicy | None = None,
        cache: int = 4096,
    ) -> Decider[S]:
        """Handle ``commands`` with a :class:`Decider`: load its stream, decide, append at the
        version loaded. In this process, commands for one stream take turns; a conflict with
        another process is re-decided up to ``retry_on_conflict`` times.

        ``cache`` is how many streams' states this process keeps after committing to them (0: load
        every time). A command on a kept stream, or on a stream this process has not seen (taken
        to be new), is decided without reading the store: the append at that version confirms
        the state, and when it conflicts the stream is loaded and the command decided again (not
        counted as a retry). A refusal, no events, or an exception, decided on such an assumed
        state is confirmed by reading what the stream holds beyond it before it is given.
        """
        if not commands:
            raise ConfigurationError(
                "app.decider(decider, *commands): name the command types it decides"
            )
        if cache < 0:
            raise ConfigurationError("app.decider: cache= is a number of streams, 0 or more")
        states: StreamStates[S] | None = StreamStates(cache, decider.fold) if cache else None

        def keep(
            ctx: Context, stream: str, state: S, version: int, events: list[Event]
        ) -> list[Event]:
            """Append the decided events at ``version``; keep the state they lead to once they
            are committed."""
            ctx._append(stream, events, version)
            if states is not None:
                ctx._after_commit(partial(states.put, stream, state, version, events))
            return events

        async def load_and_decide(command: Command, ctx: Context) -> list[Event]:
            stream = decider.stream(command)
            state, version = await ctx.load(stream, decider.evolve, decider.initial)
            events = list(decider.decide(command, state))
            return keep(ctx, stream, state, version, events) if events else events

        async def confirm_and_decide(
            command: Command,
            ctx: Context,
            stream: str,
            state: S,
            version: int,
            failure: Exception | None,
        ) -> list[Event]:
            # Only an append confirms an assumed state: read what lies beyond it first.
            assert states is not None
            state, newer = await self._fold_from(stream, decider.evolve, state, version)
            events: list[Event] = []
            if newer != version:
                version = newer
                events = list(decider.decide(command, state))
            elif failure is not None:
                states.put(stream, state, version)
                raise failure
            if not events:
                states.put(stream, state, version)
                return events
            return keep(ctx, stream, state, version, events)

        def handle(command: Command, ctx: Context) -> Awaitable[list[Event]]:
            # App.invoke decides on a kept (or assumed new) state itself, and hands over here
            # only what it could not finish: a refusal or no events decided on that state
            # (ctx._decided), confirmed by a read before it is given. Everything else (after a
            # conflict, with cache=0, a sent command) loads the stream.
            if ctx._decided is not None:
                return confirm_and_decide(command, ctx, *ctx._decided)
            return load_and_decide(command, ctx)

        handle.__qualname__ = f"Decider({getattr(decider.decide, '__qualname__', 'decide')})"
        for cls in commands:
            if not (isinstance(cls, type) and issubclass(cls, Command)):
                raise ConfigurationError(f"app.decider: {cls!r} is not a Command class")
            self._add_command_handler(
                CommandHandler(
                    cls,
                    handle,
                    True,
                    retry_on_conflict,
                    decider.stream,
                    policy or RetryPolicy(),
                    decider,
                    states,
                )
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
        for cls in sorted(self._known.keys() | self._sent_types, key=lambda c: c.__type_name__):
            if issubclass(cls, Command) and cls not in self._commands:
                problems.append(
                    Problem(
                        "command-without-handler",
                        f"command {cls.__type_name__} has no handler: register one with "
                        "@app.command, or it will wait forever when sent",
                    )
                )
        return problems

    def on_alert(self, callback: AlertCallback) -> AlertCallback:
        """Call ``callback(alert)`` (sync or async) when a message is parked or a command is dead."""
        self.alerts.add(callback)
        return callback

    def worker(self, **options: Any) -> Worker:
        """A worker for this app's subscriptions and sent commands (see :class:`Worker`)."""
        from tidings.delivery.worker import Worker

        return Worker(self, **options)

    async def run_worker(self, **options: Any) -> None:
        """Run a worker in this process until cancelled or until SIGTERM/SIGINT (when installed)."""
        await self.worker(**options).run()

    @property
    def dead_letters(self) -> DeadLetters:
        """List, show, retry and skip what subscriptions hold back."""
        from tidings.delivery.deadletters import DeadLetters

        return DeadLetters(self)

    # --- messages -----------------------------------------------------------------------------

    def _new_message(
        self,
        message: Message,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        made_id: str | None = None,
    ) -> NewMessage:
        """The message encoded, with its id: ``message_id`` as the caller chose it (validated), or
        ``made_id`` made here earlier by uuid7, or a new one."""
        cls = type(message)
        meta = self._known.get(cls)
        if meta is None:
            self.register(cls)
            meta = self._known[cls]
        if message_id is None:
            message_id = made_id or uuid7()
        else:
            validate_message_id(message_id)
        data = _message_encoder.encode(message)
        if len(data) > self.max_message_bytes:
            encode(message, self.max_message_bytes)  # raises MessageTooLarge, with advice
        kind, type_name, version = meta
        return NewMessage(
            message_id,
            kind,
            type_name,
            version,
            data,
            correlation_id or message_id,
            causation_id,
            encode_headers(headers) if headers else None,
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
        # The command's id, and one for the first message its handler records (nearly always one).
        spare_id: str | None
        message_id, spare_id = uuid7_pair()
        correlation_id = correlation_id or message_id
        turns = self._locks._waiting  # StreamTurns' own, written out below: every invoke's path
        key = None
        if handler.lock_stream is not None:
            key = handler.lock_stream(command)
            if key in turns:
                await self._locks.acquire(key)
            else:
                turns[key] = None  # try_acquire
        try:
            #: what the decider's way below decided, when it could not commit it
            decided: tuple[str, Any, int, Exception | None] | None = None
            states = handler.states
            if states is not None:  # (a decider reads no headers: it has no Context)
                # A decider's command on a state kept here, or on a stream not seen here
                # (assumed new): decided and committed right here, on the stream's turn
                # (``key``), without a Context — an invoke's usual case, written out. The
                # decider's handler, the general way below, takes what this cannot finish: a
                # refusal or no events (which it confirms by a read), a conflict (it loads the
                # stream and decides again, not counted as a retry).
                decider = handler.decider
                assert decider is not None and key is not None
                kept = states._states.pop(key, None)  # states.take(key), written out
                if kept is None:
                    state = decider.initial
                    if callable(state):
                        state = state()
                    version = 0
                else:
                    state, version, pending = kept
                    if pending:
                        state = states._fold(pending, state)
                try:
                    events = decider.decide(command, state)
                    if type(events) is not list:
                        events = list(events)
                except Exception as exc:  # a refusal, or decide not expecting this state
                    decided = (key, state, version, exc)
                else:
                    if not events:
                        decided = (key, state, version, None)
                    else:
                        messages = new_events(self, events, correlation_id, message_id, spare_id)
                        try:
                            if self._append_now(validate_stream(key), messages, version) is None:
                                one = Transaction([AppendOp(key, messages, version)])
                                if self._commit_now(one) is None:
                                    await self.store.commit(one)
                        except WrongExpectedVersion:
                            pass  # decided on a state assumed, not loaded: the handler loads it
                        else:
                            # states.put, written out: the stream was taken out above
                            kept_states = states._states
                            kept_states[key] = (state, version + len(events), events)
                            if len(kept_states) > states.limit:
                                states._evict()
                            if self._wakeups:  # self._committed(), for appends
                                for wakeup in self._wakeups:
                                    wakeup.set()
                            return events
            attempt = 0
            while True:
                # A decider's context carries the stream its command acts on (the turn's key).
                ctx = (
                    Context(self, message_id, correlation_id, stream=key)
                    if headers is None
                    else Context(self, message_id, correlation_id, None, headers, key)
                )
                ctx._spare_id, spare_id = spare_id, None  # the first attempt's only
                if decided is not None:  # (a refusal or no events, handed over from above)
                    ctx._decided, decided = decided, None
                result = handler.fn(command, ctx)
                if handler.is_async or (handler.is_async is None and type(result) is Coroutine):
                    result = await result
                tx = ctx._tx
                if tx is None or (not tx.appends and not tx):
                    return result
                try:
                    if self._commit_now(tx) is None:
                        await self.store.commit(tx)
                except WrongExpectedVersion:
                    if attempt >= handler.retry_on_conflict:
                        raise
                    attempt += 1
                    continue
                if self._wakeups or tx.outcomes:
                    self._committed(tx)
                if ctx._after is not None:
                    for callback in ctx._after:
                        callback()
                return result
        finally:
            if key is not None:
                if turns[key]:
                    self._locks.release(key)  # to the next in line
                else:
                    del turns[key]  # release, with nobody waiting

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
        new = self._new_message(command, correlation_id, None, headers, id)
        self._sent_types.add(type(command))
        if stream is None:
            # A stream of its own, named by the new id: it is new (which spares the store a
            # look-up), unless this very message was recorded before, which the store recognises.
            target, expected = self._command_stream(new), 0
        else:
            target, expected = validate_stream(stream), ANY
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
        new = self._new_message(event, correlation_id, None, headers, id)
        target = validate_stream(stream) if stream is not None else new.type
        await self._record(new, target, delay, at)
        return new.id

    async def _record(
        self,
        new: NewMessage,
        stream: str,
        delay: float | timedelta | None,
        at: datetime | float | None,
        expected_version: int = ANY,
    ) -> None:
        due_at, due_in = when(delay, at)
        if due_at is None and due_in is None:
            await self._commit_one(AppendOp(stream, [new], expected_version))
        else:
            if not self._opened:
                await self.open()
            await self._commit(Transaction(scheduled=[Scheduled(stream, new, due_at, due_in)]))

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
        events = list(events)
        if ids is not None and len(ids) != len(events):
            raise ValueError(f"app.append: {len(ids)} ids for {len(events)} events")
        new = []
        for n, event in enumerate(events):
            if not isinstance(event, Event):
                raise TypeError(
                    f"app.append takes events, got {type(event).__name__}: send commands with app.send"
                )
            new.append(
                self._new_message(
                    event, correlation_id, None, None, None if ids is None else ids[n]
                )
            )
        (done,) = await self._commit_one(AppendOp(validate_stream(stream), new, expected_version))
        return done

    async def _commit_one(self, op: AppendOp) -> list[Appended]:
        if not self._opened:
            await self.open()
        return await self._commit(Transaction([op]))

    async def _commit(self, tx: Transaction) -> list[Appended]:
        """Commit through the store, then wake this process's workers and outcome waiters."""
        done = self._commit_now(tx)
        if done is None:
            done = await self.store.commit(tx)
        self._committed(tx)
        return done

    def _committed(self, tx: Transaction) -> None:
        """Wake this process's workers and outcome waiters after ``tx`` committed."""
        if self._wakeups and (tx.appends or tx.scheduled or tx.held):
            for wakeup in self._wakeups:
                wakeup.set()
        if tx.outcomes:
            for outcome in tx.outcomes:
                for fut in self._outcome_waiters.pop(outcome.message_id, ()):
                    if not fut.done():
                        fut.set_result(None)

    # --- outcomes and documents ---------------------------------------------------------------

    async def outcome(self, message_id: str) -> Outcome:
        """What became of a sent command so far (status ``pending`` until first handled)."""
        if not self._opened:
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
            fut: asyncio.Future[None] = loop.create_future()
            self._outcome_waiters.setdefault(message_id, []).append(fut)
            try:
                await asyncio.wait([fut], timeout=wait)
            finally:
                waiters = self._outcome_waiters.get(message_id)
                if waiters is not None and fut in waiters:
                    waiters.remove(fut)
                    if not waiters:
                        del self._outcome_waiters[message_id]
            poll = min(poll * 2, 0.25)

    @overload
    async def get(self, collection: str, key: str) -> Any: ...

    @overload
    async def get(self, collection: str, key: str, type: type[T]) -> T | None: ...

    async def get(self, collection: str, key: str, type: Any = Any) -> Any:
        """A document written by a handler through ``ctx.put`` (``None`` if there is none)."""
        if not self._opened:
            await self.open()
        data = await self.store.get_document(collection, key)
        return None if data is None else msgspec.json.decode(data, type=type)

    async def documents(self, collection: str, *, limit: int = 1000) -> dict[str, Any]:
        """A collection's documents by key."""
        if not self._opened:
            await self.open()
        return {
            k: msgspec.json.decode(v)
            for k, v in await self.store.documents(collection, limit=limit)
        }

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
        return await self._fold_from(stream, evolve, initial() if callable(initial) else initial, 0)

    async def _fold_from(
        self, stream: str, evolve: Callable[[S, Any], S], state: S, version: int
    ) -> tuple[S, int]:
        """Fold the stream's events after ``version`` into ``state``."""
        page = 1000
        while True:
            found = await self.store.read_stream(stream, from_position=version + 1, limit=page)
            for env in found:
                # Commands sent into the stream are intentions, not state: only events are folded.
                if env.kind == "event":
                    state = evolve(state, self.registry.decode(env))
                version = env.stream_position
            if len(found) < page:
                return state, version


def _commits_now_of(
    store: Store,
) -> tuple[
    Callable[[Transaction], list[Appended] | None],
    Callable[[str, Sequence[NewMessage], int], int | None],
]:
    """``store.commit_now`` and ``store.append_now`` — each unless a subclass overrides
    ``commit`` below the class that wrote it (a store that injects faults or records, say):
    every commit must then go through the override, and the App always awaits ``commit``."""

    def written_by(name: str) -> type:
        return next(cls for cls in type(store).__mro__ if name in vars(cls))

    def overridden(name: str) -> bool:
        commit, now = written_by("commit"), written_by(name)
        return commit is not now and issubclass(commit, now)

    return (
        _cannot_commit_now if overridden("commit_now") else store.commit_now,
        _cannot_append_now if overridden("append_now") else store.append_now,
    )


def _cannot_commit_now(tx: Transaction) -> None:
    return None


def _cannot_append_now(stream: str, messages: Sequence[NewMessage], expected: int) -> None:
    return None


def _with_message(envelope: Envelope, message: Message) -> Envelope:
    return msgspec.structs.replace(envelope, message=message)
