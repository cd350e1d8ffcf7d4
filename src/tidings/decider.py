"""Deciders: command handlers written as two pure functions over an event-sourced stream.

``decide(command, state) -> events`` says what happens (or raises ``Refused``); ``evolve(state,
event) -> state`` folds one event into the state. The stream is loaded, the command decided, and
the events appended at the version loaded. Because both functions are pure, deciding again after a
concurrent write (``WrongExpectedVersion``) is always safe, and :class:`DeciderHandler` does so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

from tidings.context import Context, Services
from tidings.errors import WrongExpectedVersion
from tidings.messages import Command, Event, validate_stream
from tidings.repository import initial_state
from tidings.store import AppendOp, Transaction

S = TypeVar("S")


@dataclass(frozen=True)
class Decider(Generic[S]):
    """The pure core of an aggregate.

    ``initial`` is the state of an empty stream (or a function making it, for mutable states);
    ``stream`` names the stream a command acts on.
    """

    decide: Callable[[Any, S], Sequence[Event]]
    evolve: Callable[[S, Any], S]
    initial: S | Callable[[], S]
    stream: Callable[[Any], str]

    def initial_state(self) -> S:
        """A fresh initial state."""
        return initial_state(self.initial)

    def fold(self, events: Sequence[Event], state: S | None = None) -> S:
        """The state after ``events`` (from the initial state unless one is given)."""
        current = self.initial_state() if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current

    def run(self, command: Command, events: Sequence[Event]) -> list[Event]:
        """Decide ``command`` on the state ``events`` give, without a store (for tests)."""
        return list(self.decide(command, self.fold(events)))


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

    async def acquire(self, key: str) -> None:
        """Wait for the key's turn."""
        if key not in self._waiting:
            self._waiting[key] = None
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
    it. Sent commands, which the worker runs without turns, always load the stream.
    """

    def __init__(self, decider: Decider[S], *, retry_on_conflict: int, cache: int) -> None:
        self.decider = decider
        self.retry_on_conflict = retry_on_conflict
        self.states: StreamStates[S] | None = StreamStates(cache, decider.fold) if cache else None
        self.turns = StreamTurns()

    def __repr__(self) -> str:
        return f"Decider({getattr(self.decider.decide, '__qualname__', 'decide')})"

    async def __call__(self, command: Command, ctx: Context) -> list[Event]:
        """Handle a sent command: load its stream, decide, append at the version loaded."""
        decider = self.decider
        stream = decider.stream(command)
        state, version = await ctx.load(stream, decider.evolve, decider.initial)
        events = list(decider.decide(command, state))
        if events:
            ctx.append(stream, events, expected_version=version)
        return events

    async def invoke(
        self, command: Command, services: Services, message_id: str, correlation_id: str
    ) -> list[Event]:
        """Decide ``command`` now, on its stream's turn, and commit what it decided."""
        stream = validate_stream(self.decider.stream(command))
        await self.turns.acquire(stream)
        try:
            return await self._decide(command, stream, services, message_id, correlation_id)
        finally:
            self.turns.release(stream)

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
                events = list(decider.decide(command, state))
            except Exception as exc:  # a refusal, or decide not expecting this state
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
            messages = services.factory.events(events, correlation_id, message_id)
            try:
                await services.committer.commit(Transaction([AppendOp(stream, messages, version)]))
            except WrongExpectedVersion:
                if not assumed:
                    if conflicts >= self.retry_on_conflict:
                        raise
                    conflicts += 1
                state, version = await reader.load(stream, decider.evolve, decider.initial)
                assumed = False
                continue
            self._keep(stream, state, version, events)
            return events

    def _keep(self, stream: str, state: S, version: int, events: Sequence[Event] = ()) -> None:
        if self.states is not None:
            self.states.put(stream, state, version, events)
