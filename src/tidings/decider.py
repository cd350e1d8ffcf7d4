"""``Decider``: a command handler written as two pure functions over an event-sourced stream.

``decide(command, state) -> events`` says what happens (or raises ``Refused``); ``evolve(state,
event) -> state`` folds one event into the state. The App loads the stream, decides, and appends the
events at the version it loaded. Because both functions are pure, re-running after a concurrent
write (``WrongExpectedVersion``) is always safe, and the App does so by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, TypeVar

from tidings.messages import Command, Event

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
        return self.initial() if callable(self.initial) else self.initial

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
    with the events just committed and folded when it is next taken (most streams a busy process
    writes are not written again soon, and some never).
    """

    __slots__ = ("_fold", "_states", "limit")

    def __init__(self, limit: int, fold: Callable[[Sequence[Event], S], S]) -> None:
        self.limit = limit
        self._fold = fold
        self._states: dict[str, tuple[S, int, Sequence[Event]]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def take(self, stream: str) -> tuple[S, int] | None:
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
            self._evict()

    def _evict(self) -> None:
        # Drop the oldest eighth at once (at least one): finding a dict's first entry walks the
        # holes left before it, so doing it once per eviction rather than once per put.
        states = self._states
        for oldest in list(islice(states, max(1, self.limit // 8))):
            del states[oldest]
