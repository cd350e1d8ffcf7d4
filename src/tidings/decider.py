"""Deciders: command handlers written as two pure functions over an event-sourced stream.

``decide(command, state) -> events`` says what happens (or raises ``Refused``); ``evolve(state,
event) -> state`` folds one event into the state. The stream is loaded, the command decided, and
the events appended at the version loaded. Because both functions are pure, deciding again after a
concurrent write (``WrongExpectedVersion``) is always safe, and :class:`DeciderHandler` does so.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

import msgspec

from tidings.context import Context, Services, recorded, refusal
from tidings.dependencies import callable_name
from tidings.errors import ConfigurationError, Refused, StateMutated, WrongExpectedVersion
from tidings.messages import Command, Event, validate_stream
from tidings.records import ANY, Transaction
from tidings.repository import Repository, initial_state

S = TypeVar("S")

#: A document a decider's index writes with its events: (collection, key, value; None deletes it).
IndexWrite = tuple[str, str, Any]


@dataclass(frozen=True)
class Decider(Generic[S]):
    """The pure core of an aggregate.

    ``initial`` is the state of an empty stream (or a function making it, for mutable states).
    ``stream`` names the stream a command acts on: ``stream(command) -> str``, or, when the
    command does not say it, ``async stream(command, reader) -> str`` reading documents or
    streams through ``reader`` (a :class:`~tidings.repository.Repository`). ``index(event)``
    gives the documents each appended event writes (a lookup ``stream`` reads), committed
    atomically with the events. ``result(events)`` is what an invoke returns (default: the
    events). ``decide`` must not change the state it is given (see ``check_purity``).
    """

    decide: Callable[[Any, S], Sequence[Event]]
    evolve: Callable[[S, Any], S]
    initial: S | Callable[[], S]
    stream: Callable[..., str | Awaitable[str]]
    index: Callable[[Any], Iterable[IndexWrite]] | None = None
    result: Callable[[list[Event]], Any] | None = None
    #: whether ``stream`` takes the reader (it has two parameters)
    reads: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            params = inspect.signature(self.stream).parameters.values()
        except (TypeError, ValueError):  # a builtin (operator.attrgetter): the one-argument form
            object.__setattr__(self, "reads", False)
            return
        required = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if not 1 <= len(required) <= 2:
            raise ConfigurationError(
                f"Decider: stream={callable_name(self.stream)} takes {len(required)} "
                "parameters; give stream(command) -> str, or async stream(command, reader) -> "
                "str to look the stream up"
            )
        object.__setattr__(self, "reads", len(required) == 2)

    def initial_state(self) -> S:
        """A fresh initial state."""
        return initial_state(self.initial)

    def fold(self, events: Sequence[Event], state: S | None = None) -> S:
        """The state after ``events`` (from the initial state unless one is given)."""
        current = self.initial_state() if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current

    def run(
        self, command: Command, events: Sequence[Event], *, check_purity: bool = True
    ) -> list[Event]:
        """Decide ``command`` on the state ``events`` give, without a store (for tests); with
        ``check_purity``, ``StateMutated`` if ``decide`` changes the state."""
        return self.decided(command, self.fold(events), check_purity=check_purity)

    def decided(
        self, command: Command, state: S, *, check_purity: bool, stream: str | None = None
    ) -> list[Event]:
        """``decide(command, state)`` as a list; with ``check_purity``, ``StateMutated`` (also
        in place of a refusal) if it changed ``state``."""
        if not check_purity:
            return list(self.decide(command, state))
        before = snapshot(state)
        try:
            return list(self.decide(command, state))
        finally:
            if snapshot(state) != before:
                raise StateMutated(callable_name(self.decide), type(command).__name__, stream)

    async def route(self, command: Command, reader: Repository) -> str:
        """The stream ``command`` acts on (validated)."""
        found = self.stream(command, reader) if self.reads else self.stream(command)
        if not isinstance(found, str) and inspect.isawaitable(found):
            found = await found
        return validate_stream(found)

    def write(self, ctx: Context, stream: str, events: Sequence[Event], version: int) -> None:
        """Add ``events`` to ``ctx``'s unit of work: appended at ``version``, with the documents
        ``index`` says they write."""
        ctx.append(stream, events, expected_version=version)
        if self.index is None:
            return
        for event in events:
            for collection, key, value in self.index(event):
                if value is None:
                    ctx.delete(collection, key)
                else:
                    ctx.put(collection, key, value)

    def answer(self, events: list[Event]) -> Any:
        """What handling a command returns: ``result(events)``, or the events."""
        return events if self.result is None else self.result(events)


_snapshot = msgspec.json.Encoder().encode


def snapshot(state: object) -> bytes:
    """The state's JSON, to tell whether ``decide`` changed it."""
    try:
        return _snapshot(state)
    except Exception as exc:
        raise ConfigurationError(
            f"check_purity compares a decider's state before and after decide as JSON, and a "
            f"{type(state).__name__} cannot be encoded ({exc}); make the state a msgspec Struct, "
            "dataclass or plain containers, or turn the check off (app.decider(..., "
            "check_purity=False), given(..., check_purity=False))"
        ) from exc


class StreamStates(Generic[S]):
    """The states of the streams a decider last committed to in this process, newest last.

    An entry is *taken* (removed) when a command starts on its stream and put back only after that
    command's commit succeeded, so a failed or conflicting commit never leaves a state behind that
    the store does not hold — even when ``evolve`` changes states in place. A state is put back
    with the events just committed, folded when it is next taken (many streams are not written
    again soon).
    """

    __slots__ = ("_fold", "_states", "limit")

    def __init__(self, limit: int, fold: Callable[[Sequence[Event], S], S]) -> None:
        self.limit = limit
        self._fold = fold
        self._states: dict[str, tuple[S, int, Sequence[Event]]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, stream: object) -> bool:
        return stream in self._states

    def clear(self) -> None:
        """Forget every state (the store they were read from is replaced)."""
        self._states.clear()

    def take(self, stream: str) -> tuple[S, int] | None:
        """Remove the stream's state and return it with its version (None if none is kept)."""
        found = self._states.pop(stream, None)
        if found is None:
            return None
        state, version, events = found
        return (self._fold(events, state) if events else state), version

    def put(self, stream: str, state: S, version: int, events: Sequence[Event] = ()) -> None:
        """Keep ``state`` at ``version`` — or, with ``events`` appended after it, the state they
        lead to, at ``version + len(events)``."""
        states = self._states
        states.pop(stream, None)
        states[stream] = (state, version + len(events), events)
        if len(states) > self.limit:
            # Drop the oldest eighth at once (at least one), rather than one per put.
            for oldest in list(islice(states, max(1, self.limit // 8))):
                del states[oldest]


class StreamTurns:
    """One at a time per key, in the order they asked."""

    def __init__(self) -> None:
        #: key -> who waits for it (None while nobody does)
        self._waiting: dict[str, list[asyncio.Future[None]] | None] = {}

    def __len__(self) -> int:
        """How many keys are taken."""
        return len(self._waiting)

    def take(self, key: str) -> bool:
        """Take the key's turn if it is free (else :meth:`acquire` waits for it)."""
        if key in self._waiting:
            return False
        self._waiting[key] = None
        return True

    async def acquire(self, key: str) -> None:
        """Wait for the key's turn."""
        if self.take(key):
            return
        waiters = self._waiting[key]
        if waiters is None:
            waiters = self._waiting[key] = []
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(key)  # handed over to us as we were cancelled: pass it on
            elif fut in waiters:
                waiters.remove(fut)
            raise

    def release(self, key: str) -> None:
        """End the key's turn: the next in line has it."""
        waiters = self._waiting[key]
        while waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return
        del self._waiting[key]


class DeciderHandler(Generic[S]):
    """Carries out a decider's commands.

    Invoked commands for one stream take turns in this process. Each is decided on the state kept
    from this process's last commit to its stream (``cache`` streams are kept; 0: none), or, on a
    stream not seen here, on the initial state (taken to be new), without reading the store. The
    append at that version confirms the state; when it conflicts, the stream is loaded and the
    command decided again (not counted as one of ``retry_on_conflict``). A refusal, no events or
    an exception decided on such an assumed state is given only once a read finds nothing beyond
    it; a refusal that records events is appended like decided events. Sent commands, which the
    worker runs without turns, always load the stream. ``check_purity`` compares each state
    before and after ``decide`` (a cost per command: for tests; the harness turns it on).
    """

    def __init__(
        self,
        decider: Decider[S],
        *,
        retry_on_conflict: int,
        cache: int,
        check_purity: bool = False,
    ) -> None:
        self.decider = decider
        self.retry_on_conflict = retry_on_conflict
        self.check_purity = check_purity
        self.states: StreamStates[S] | None = StreamStates(cache, decider.fold) if cache else None
        self.turns = StreamTurns()

    def __repr__(self) -> str:
        return f"Decider({callable_name(self.decider.decide)})"

    async def __call__(self, command: Command, ctx: Context) -> Any:
        """Handle a sent command: load its stream, decide, append at the version loaded."""
        decider = self.decider
        stream = await decider.route(command, ctx.reader)  # its refusal records as a handler's
        state, version = await ctx.load(stream, decider.evolve, decider.initial)
        try:
            events = decider.decided(command, state, check_purity=self.check_purity, stream=stream)
        except Refused as refused:
            refused.stream, refused.expected_version = stream, version
            raise
        if events:
            decider.write(ctx, stream, events, version)
        return decider.answer(events)

    def refusal(self, ctx: Context, refused: Refused) -> Transaction | None:
        """What a refusal ``__call__`` raised commits: the events it records, appended to the
        stream at the version decided on (None when it records nothing)."""
        if refused.stream is None or not refused.record:  # refused by ``stream``, not decided
            return refusal(ctx, refused)
        unit = ctx.fresh()
        expected = ANY if refused.expected_version is None else refused.expected_version
        self.decider.write(unit, refused.stream, recorded(refused), expected)
        return unit.writes

    async def invoke(
        self, command: Command, services: Services, message_id: str, correlation_id: str
    ) -> Any:
        """Decide ``command`` now, on its stream's turn, and commit what it decided."""
        try:
            stream = await self.decider.route(command, services.reader)
        except Refused as refused:  # records what it names, as a plain handler's refusal
            tx = refusal(
                Context(services.factory, services.reader, message_id, correlation_id), refused
            )
            if tx:
                await services.committer.commit(tx)
            raise
        if not self.turns.take(stream):
            await self.turns.acquire(stream)
        try:
            events = await self._decide(command, stream, services, message_id, correlation_id)
        finally:
            self.turns.release(stream)
        return self.decider.answer(events)

    async def _decide(
        self,
        command: Command,
        stream: str,
        services: Services,
        message_id: str,
        correlation_id: str,
    ) -> list[Event]:
        decider, reader = self.decider, services.reader
        if self.states is None:
            state, version = await reader.load(stream, decider.evolve, decider.initial)
            assumed = False
        else:
            state, version = self.states.take(stream) or (decider.initial_state(), 0)
            assumed = True
        conflicts = 0
        while True:
            failure: Exception | None = None
            try:
                events = decider.decided(
                    command, state, check_purity=self.check_purity, stream=stream
                )
            except Refused as refused:  # a refusal may record events all the same
                events, failure = recorded(refused), refused
            except Exception as exc:  # decide not expecting this state
                events, failure = [], exc
            if not events:
                if assumed:  # only an append confirms an assumed state: read beyond it
                    state, newer = await reader.fold(stream, decider.evolve, state, version)
                    assumed = False
                    if newer != version:
                        version = newer
                        continue
                self._keep(stream, state, version)
                if failure is not None:
                    raise failure
                return events
            unit = Context(services.factory, reader, message_id, correlation_id)
            decider.write(unit, stream, events, version)
            try:
                await services.committer.commit(unit.transaction)
            except WrongExpectedVersion:
                if not assumed:
                    if conflicts >= self.retry_on_conflict:
                        raise
                    conflicts += 1
                state, version = await reader.load(stream, decider.evolve, decider.initial)
                assumed = False
                continue
            self._keep(stream, state, version, events)
            if failure is not None:
                raise failure
            return events

    def _keep(self, stream: str, state: S, version: int, events: Sequence[Event] = ()) -> None:
        if self.states is not None:
            self.states.put(stream, state, version, events)
