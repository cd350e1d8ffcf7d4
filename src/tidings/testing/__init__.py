"""Testing helpers for applications built on tidings.

- :func:`given` — given/when/then for deciders: ``given(decider, events).when(command).then(events)``.
- :class:`WorkflowSpec` — steps of a workflow one event at a time: what it sent, which timeouts it
  set, whether it completed.
- :class:`Harness` — runs an app on its own in-memory store with a clock you move (and checks that
  its deciders' ``decide`` leaves states unchanged):
  ``await harness.settle()`` delivers everything that is due; ``await harness.advance(seconds)``
  moves time forward (timeouts, scheduled messages, delayed retries) and settles. Dead letters
  and outcomes can be inspected.

``tidings.testing.contract`` holds the backend contract suites (it needs pytest).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tidings.app import App
from tidings.backends.memory import MemoryStore
from tidings.context import Context
from tidings.decider import Decider, DeciderHandler
from tidings.errors import ConfigurationError, Refused
from tidings.ids import uuid7
from tidings.messages import Command, Envelope, Event, Message
from tidings.records import DEAD, Held, Outcome, Transaction
from tidings.store import Store
from tidings.workflow import Workflow, WorkflowTimeout

S = TypeVar("S")

__all__ = ["DeciderScenario", "Harness", "ManualClock", "StepReport", "WorkflowSpec", "given"]


# --- deciders ---------------------------------------------------------------------------------


@dataclass
class DeciderScenario(Generic[S]):
    """``given(decider, events).when(command)`` → then what happened."""

    decider: Decider[S]
    history: Sequence[Event]
    events: list[Event] | None = None
    refused: Refused | None = None
    #: raise ``StateMutated`` when ``decide`` changes the state it is given
    check_purity: bool = True

    def when(self, command: Command) -> DeciderScenario[S]:
        try:
            self.events = self.decider.run(command, self.history, check_purity=self.check_purity)
        except Refused as refused:
            self.refused = refused
        return self

    def then_result(self, expected: Any) -> None:
        """Assert the command was accepted and its invoke would return ``expected`` (what the
        decider's ``result`` makes of the events)."""
        if self.refused is not None:
            raise AssertionError(
                f"expected the result {expected!r}, but the command was refused: {self.refused!r}"
            )
        got = self.decider.answer(self.events or [])
        if got != expected:
            raise AssertionError(f"expected the result {expected!r}\n     got the result {got!r}")

    def then(self, expected: Sequence[Event]) -> None:
        """Assert the command was accepted and decided exactly these events."""
        if self.refused is not None:
            raise AssertionError(
                f"expected {list(expected)!r}, but the command was refused: {self.refused!r}"
            )
        if self.events != list(expected):
            raise AssertionError(
                f"expected events {list(expected)!r}\n     got events {self.events!r}"
            )

    def then_refused(
        self,
        *,
        code: str | None = None,
        reason: str | None = None,
        recorded: Sequence[Event] | None = None,
    ) -> Refused:
        """Assert the command was refused (with this code / reason / recorded events, when
        given)."""
        if self.refused is None:
            raise AssertionError(
                f"expected a refusal, but the command was accepted: {self.events!r}"
            )
        if code is not None and self.refused.code != code:
            raise AssertionError(
                f"expected refusal code {code!r}, got {self.refused.code!r} ({self.refused.reason})"
            )
        if reason is not None and reason not in self.refused.reason:
            raise AssertionError(
                f"expected a reason containing {reason!r}, got {self.refused.reason!r}"
            )
        if recorded is not None and list(self.refused.record) != list(recorded):
            raise AssertionError(
                f"expected the refusal to record {list(recorded)!r}\n"
                f"                        got {list(self.refused.record)!r}"
            )
        return self.refused


def given(
    decider: Decider[S], events: Sequence[Event] = (), *, check_purity: bool = True
) -> DeciderScenario[S]:
    """Start a decider scenario from the events already in its stream. ``decide`` is checked
    not to change its state (``StateMutated``) unless ``check_purity=False``."""
    return DeciderScenario(decider, list(events), check_purity=check_purity)


# --- a clock you move -------------------------------------------------------------------------


class ManualClock:
    """A clock that starts at the real time and moves only when told."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- workflows --------------------------------------------------------------------------------


@dataclass
class StepReport:
    """What one workflow step did (as :class:`WorkflowSpec` reports it; a handler's own ``wf``
    is a :class:`tidings.workflow.Step`)."""

    sent: list[Command] = field(default_factory=list)
    published: list[Event] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    completed: bool = False
    state: Any = None


class WorkflowSpec(Generic[S]):
    """Feed a workflow events one at a time (and fire its timeouts), and see what each step did.

    Steps are committed to an in-memory store between calls, exactly as the worker would.
    """

    def __init__(self, workflow: Workflow[S]) -> None:
        self.workflow = workflow
        self.app = App("spec", store=MemoryStore())
        self._pending: dict[tuple[str, str], WorkflowTimeout] = {}

    async def given(self, *events: Event) -> None:
        """Steps the workflow takes before the one under test."""
        for event in events:
            await self.when(event)

    async def when(self, event: Event) -> StepReport:
        """One step: the workflow reacts to ``event``."""
        return await self._step(event)

    async def fire_timeout(self, key: str, name: str) -> StepReport:
        """The timeout ``name`` of instance ``key`` falls due."""
        timeout = self._pending.get((key, name))
        if timeout is None:
            raise AssertionError(
                f"instance {key!r} has no pending timeout {name!r} (pending: {sorted(self._pending)})"
            )
        return await self._step(timeout)

    async def state(self, key: str) -> tuple[S | None, bool]:
        """An instance's state and whether it is done."""
        return await self.workflow.instance(self.app, key)

    async def _step(self, event: Event) -> StepReport:
        await self.app.open()
        ctx = Context(self.app.factory, self.app.reader, uuid7(), "spec")
        await self.workflow.react(event, ctx)
        tx: Transaction = ctx.transaction
        step = StepReport()
        for op in tx.appends:
            for new in op.messages:
                message = self.app.registry.decode(_envelope(new, op.stream))
                if isinstance(message, Command):
                    step.sent.append(message)
                elif isinstance(message, Event) and not type(message).__type_name__.startswith(
                    "tidings.Workflow"
                ):
                    step.published.append(message)
        for item in tx.scheduled:
            message = self.app.registry.decode(_envelope(item.message, item.stream))
            if isinstance(message, WorkflowTimeout):
                step.timeouts.append(message.name)
                self._pending[(message.key, message.name)] = message
            elif isinstance(message, Command):
                step.sent.append(message)
            elif isinstance(message, Event):
                step.published.append(message)
        await self.app.committer.commit(tx)
        key = event.key if isinstance(event, WorkflowTimeout) else None
        if key is None:
            entry = self.workflow.handlers.get(type(event))
            key = str(entry[1](event)) if entry is not None else None
        if key is not None:
            step.state, step.completed = await self.workflow.instance(self.app, key)
        return step


def _envelope(new: Any, stream: str) -> Envelope:
    return Envelope(new.id, new.kind, new.type, new.version, stream, 0, 0, 0.0, new.data)


# --- the harness ------------------------------------------------------------------------------


class Harness:
    """Runs an app on an in-memory store with a manual clock, delivered to completion on demand.

    ``harness.run(app)`` runs any App that is not open — the module-level
    ``app = App("shop", store="sqlite:///shop.db")`` of production code too — on the harness's
    own store (``harness.store``, a ``MemoryStore`` whose clock is ``harness.clock``): for the run
    the App's store is replaced, and given back when the run ends. Nothing is written to the
    App's own store, and every timeout and retry is due on the clock ``advance`` moves::

        async with Harness().run(app) as harness:
            await app.invoke(ReserveSeat(...))
            await harness.settle()
            await harness.advance(30)           # the payment timeout fires
            assert not await harness.dead_letters()
    """

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.store = MemoryStore(clock=self.clock)
        self.app: App | None = None
        #: the store the App had before the run, given back after it
        self._given_back: Store | None = None
        #: the deciders whose purity the run checks, with their setting before it
        self._checked: list[tuple[DeciderHandler[Any], bool]] = []

    def run(self, app: App) -> Harness:
        """Run ``app`` on this harness's store and clock (``async with harness.run(app):``)."""
        if app.is_open:
            raise ConfigurationError(
                f"Harness.run: App {app.name!r} is open on its own store "
                f"({getattr(app.store, 'url', type(app.store).__name__)}), where the harness's "
                "clock moves nothing: give the harness the App before it is opened, and it runs "
                "the App on its own memory store"
            )
        if self.app is not None:
            raise ConfigurationError("Harness.run: this harness runs an app already")
        self.app = app
        if app.store is not self.store:
            self._given_back = app.store
            app.store = self.store
        for handler in dict.fromkeys(
            h.decider for h in app.command_handlers.values() if h.decider is not None
        ):
            self._checked.append((handler, handler.check_purity))
            handler.check_purity = True
        return self

    async def __aenter__(self) -> Harness:
        try:
            await self._app().open()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        app, self.app = self.app, None
        if app is None:
            return
        await app.close()
        if self._given_back is not None:
            app.store, self._given_back = self._given_back, None
        for handler, before in self._checked:
            handler.check_purity = before
        self._checked.clear()

    def _app(self) -> App:
        if self.app is None:
            raise RuntimeError("the harness runs no app: use `async with harness.run(app):`")
        return self.app

    async def settle(self) -> int:
        """Deliver everything that is due now, as the only worker. Returns the rounds that did work."""
        return await self._app().worker(seed=0).drain()

    async def advance(self, seconds: float) -> int:
        """Move the clock forward and deliver what fell due (timeouts, scheduled messages, retries)."""
        self.clock.advance(seconds)
        return await self.settle()

    async def dead_letters(self, subscription: str | None = None) -> list[Held]:
        """The dead letters (of one subscription, or all)."""
        return await self._app().dead_letters.list(subscription=subscription, status=DEAD)

    async def outcome(self, message_id: str) -> Outcome:
        """A sent command's outcome so far."""
        return await self._app().outcome(message_id)

    async def messages(self, *types: type[Message]) -> list[Message]:
        """Every recorded message (of these types), decoded, in global order."""
        found = await self._app().read_all(types=list(types) if types else None, limit=1_000_000)
        return [env.message for env in found]
