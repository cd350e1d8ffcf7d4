"""Workflows (process managers): long-running reactions to events, keyed by a correlation value.

A workflow reacts to events by sending commands, keeps its state per *instance* (one per key, e.g.
one per reservation), schedules timeouts, and runs compensations when a later step fails or times
out::

    purchase = Workflow("purchase", state=Purchase, key=lambda e: e.reservation_id)

    @purchase.on(SeatReserved, starts=True)
    def reserved(state: Purchase, event: SeatReserved, wf: Step) -> Purchase:
        wf.send(RequestPayment(...))
        wf.timeout("payment", after=30)
        return Purchase(seat=event.seat)

    app.workflow(purchase)

Each instance has its own stream (``$wf-purchase-<key>``, in the reserved namespace; its timeouts
fall due in ``$wf-purchase-<key>.timeouts``) recording every step — what it reacted to
and the state after — and a document holding its current state. Both are written in the
transaction that moves the workflow's subscription checkpoint, together with the commands it
sends and the timeouts it schedules, so a step takes effect exactly once even across crashes.
A timeout is a scheduled message on the store's clock: it fires after a worker restart too. A
completed instance records late events and ignores them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from tidings.context import Context
from tidings.errors import ConfigurationError
from tidings.ids import uuid7
from tidings.messages import (
    Command,
    Event,
    InternalStream,
    internal_stream,
    validate_subscription_name,
)
from tidings.records import NO_STREAM
from tidings.repository import decode_document

S = TypeVar("S")


class WorkflowTimeout(Event, type_name="tidings.WorkflowTimeout"):
    """A workflow instance's timeout fell due (scheduled when the timeout was set)."""

    workflow: str
    key: str
    name: str
    token: str


class WorkflowStepped(Event, type_name="tidings.WorkflowStepped"):
    """A workflow instance reacted to a message; ``state`` is its state afterwards (JSON)."""

    workflow: str
    key: str
    reacted_to: str
    message_id: str
    state: msgspec.Raw
    done: bool


class WorkflowIgnored(Event, type_name="tidings.WorkflowIgnored"):
    """A message reached a workflow instance that had completed (or never started): recorded, ignored."""

    workflow: str
    key: str
    reacted_to: str
    message_id: str
    reason: str


class Instance(msgspec.Struct):
    """What is kept of a workflow instance between steps (its document)."""

    version: int = 0
    done: bool = False
    state: msgspec.Raw = msgspec.Raw(b"null")
    timeouts: dict[str, str] = msgspec.field(default_factory=dict)


class Documents(Protocol):
    """Where documents are read: an App, or a handler's Context."""

    async def get(self, collection: str, key: str, type: type[Instance]) -> Instance | None: ...


class Step:
    """What a workflow handler may do: send commands, publish events, set and cancel timeouts,
    and complete the instance. Everything is committed with the step."""

    def __init__(self, workflow: Workflow[Any], key: str, ctx: Context, instance: Instance) -> None:
        self.workflow = workflow
        self.key = key
        self.ctx = ctx
        self._instance = instance
        self.completed = False

    def send(
        self, command: Command, *, stream: str | None = None, delay: float | timedelta | None = None
    ) -> str:
        """Send a command durably with this step (its outcome is recorded under the returned id)."""
        return self.ctx.send(command, stream=stream, delay=delay)

    def publish(self, event: Event, *, stream: str | None = None) -> str:
        """Publish an event with this step."""
        return self.ctx.publish(event, stream=stream)

    def timeout(self, name: str, *, after: float | timedelta) -> None:
        """Fire ``@workflow.on_timeout(name)`` after ``after`` (replacing an earlier one of that name)."""
        token = uuid7()
        self._instance.timeouts[name] = token
        self.ctx.publish(
            WorkflowTimeout(workflow=self.workflow.name, key=self.key, name=name, token=token),
            stream=InternalStream(f"{self.workflow.stream(self.key)}.timeouts"),
            delay=after,
        )

    def cancel_timeout(self, name: str) -> None:
        """Cancel a pending timeout (when it falls due it is ignored)."""
        self._instance.timeouts.pop(name, None)

    def complete(self) -> None:
        """Mark the instance done: later messages for it are recorded and ignored."""
        self.completed = True
        self._instance.timeouts.clear()


Handler = Callable[[Any, Any, Step], Any]


@dataclass
class Workflow(Generic[S]):
    """A process manager. ``state`` is the type of an instance's state (a msgspec Struct,
    dataclass, dict…) and ``initial`` makes a fresh one; ``key`` takes the instance key from an
    event (the default for every ``on`` without its own)."""

    name: str
    state: type[S]
    key: Callable[[Any], str]
    initial: Callable[[], S] | None = None
    handlers: dict[type[Event], tuple[Handler, Callable[[Any], str], bool]] = field(
        default_factory=dict
    )
    timeouts: dict[str, Handler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_subscription_name(self.name)

    def stream(self, key: str) -> str:
        """The stream recording an instance's steps (reserved: ``$wf-<name>-<key>``)."""
        return internal_stream(f"wf-{self.name}-{key}")

    @property
    def collection(self) -> str:
        return f"workflow:{self.name}"

    def on(
        self, event: type[Event], *, starts: bool = False, key: Callable[[Any], str] | None = None
    ) -> Callable[[Handler], Handler]:
        """React to ``event``: ``handler(state, event, step) -> new state``. With ``starts=True`` the
        event starts an instance that does not exist yet; otherwise it is ignored for unknown keys."""

        def decorate(fn: Handler) -> Handler:
            if event in self.handlers:
                raise ConfigurationError(
                    f"workflow {self.name!r} already reacts to {event.__name__}"
                )
            self.handlers[event] = (fn, key or self.key, starts)
            return fn

        return decorate

    def on_timeout(self, name: str) -> Callable[[Handler], Handler]:
        """React to the timeout ``name``: ``handler(state, timeout, step) -> new state``."""

        def decorate(fn: Handler) -> Handler:
            self.timeouts[name] = fn
            return fn

        return decorate

    def fresh(self) -> S:
        return self.initial() if self.initial is not None else self.state()

    # --- running ------------------------------------------------------------------------------

    async def react(self, message: Event, ctx: Context) -> None:
        """The subscriber behind the workflow: one step of one instance."""
        if isinstance(message, WorkflowTimeout):
            if message.workflow != self.name:
                return
            key = message.key
            handler = self.timeouts.get(message.name)
            starts = False
        else:
            entry = self.handlers.get(type(message))
            if entry is None:
                return
            handler, key_of, starts = entry
            key = str(key_of(message))
        stored = await ctx.get(self.collection, key, Instance)
        instance = stored if stored is not None else Instance()
        stream = self.stream(key)
        if isinstance(message, WorkflowTimeout):
            if instance.timeouts.get(message.name) != message.token or handler is None:
                return  # cancelled, replaced, completed, or no handler: a stale timeout
            instance.timeouts.pop(message.name)
        if instance.done or (stored is None and not starts):
            reason = (
                "the instance has completed"
                if instance.done
                else "no instance has started for this key"
            )
            self._record(
                ctx,
                instance,
                key,
                stream,
                WorkflowIgnored(
                    workflow=self.name,
                    key=key,
                    reacted_to=type(message).__type_name__,
                    message_id=ctx.message_id,
                    reason=reason,
                ),
            )
            return
        state = self._state(key, instance) if stored is not None else self.fresh()
        step = Step(self, key, ctx, instance)
        assert handler is not None
        result = handler(state, message, step)
        if inspect.isawaitable(result):
            result = await result
        new_state = state if result is None else result
        instance.state = msgspec.Raw(msgspec.json.encode(new_state))
        instance.done = step.completed
        self._record(
            ctx,
            instance,
            key,
            stream,
            WorkflowStepped(
                workflow=self.name,
                key=key,
                reacted_to=type(message).__type_name__,
                message_id=ctx.message_id,
                state=instance.state,
                done=instance.done,
            ),
        )

    def _record(
        self, ctx: Context, instance: Instance, key: str, stream: str, event: Event
    ) -> None:
        # The expected version makes two workers stepping one instance at once conflict (and the
        # loser retry on the new state) instead of losing a step.
        ctx.append(
            InternalStream(stream),
            [event],
            expected_version=instance.version if instance.version else NO_STREAM,
        )
        instance.version += 1
        ctx.put(self.collection, key, instance)

    async def instance(self, documents: Documents, key: str) -> tuple[S | None, bool]:
        """An instance's current state and whether it is done (``(None, False)`` if none), read
        through ``documents`` (an App)."""
        stored = await documents.get(self.collection, key, Instance)
        if stored is None:
            return None, False
        return self._state(key, stored), stored.done

    def _state(self, key: str, instance: Instance) -> S:
        state: S = decode_document(self.collection, key, instance.state, self.state)
        return state


__all__ = ["Instance", "Step", "Workflow", "WorkflowIgnored", "WorkflowStepped", "WorkflowTimeout"]
