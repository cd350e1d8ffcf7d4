"""``Decider``: a command handler written as two pure functions over an event-sourced stream.

``decide(command, state) -> events`` says what happens (or raises ``Refused``); ``evolve(state,
event) -> state`` folds one event into the state. The App loads the stream, decides, and appends the
events at the version it loaded. Because both functions are pure, re-running after a concurrent
write (``WrongExpectedVersion``) is always safe, and the App does so by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
