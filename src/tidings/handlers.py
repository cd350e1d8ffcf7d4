"""What the App registers: the one handler of a command type, subscribers, the problems
``validate`` finds, and the turns commands on one stream take in one process."""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from tidings.context import Context
from tidings.decider import Decider, StreamStates
from tidings.delivery.policy import RetryPolicy
from tidings.errors import ConfigurationError
from tidings.messages import Command, Event, Message


@dataclass(frozen=True, slots=True)
class CommandHandler:
    """The one handler of a command type."""

    command: type[Command]
    fn: Callable[[Any, Context], Any]
    #: True: ``fn`` returns an awaitable; False: its result; None: either (a coroutine is awaited)
    is_async: bool | None
    #: how many times to re-run the handler after ``WrongExpectedVersion``
    retry_on_conflict: int = 0
    #: when set, handlers for the same stream run one at a time in this process
    lock_stream: Callable[[Any], str] | None = None
    #: retries when the command is sent (a refusal is an answer, never retried)
    policy: RetryPolicy = RetryPolicy()
    #: a decider's handler: the decider, and the states it keeps (invoke decides on one of them
    #: without a Context, the usual case written out)
    decider: Decider[Any] | None = None
    states: StreamStates[Any] | None = None

    @property
    def subscription(self) -> str:
        """The name of the subscription that delivers sent commands of this type."""
        return f"cmd:{self.command.__type_name__}"

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
    policy: RetryPolicy = RetryPolicy()
    #: where a new subscription starts: "beginning" (catch up on everything) or "now"
    start: str = "beginning"
    partitions: int = 8


@dataclass(frozen=True, slots=True)
class Problem:
    """A mistake in the application's wiring, found by :meth:`App.validate`."""

    code: str
    message: str


class StreamTurns:
    """One-at-a-time per key, with no lock object at all while a key is uncontended."""

    def __init__(self) -> None:
        #: key -> who waits for it (None while nobody does)
        self._waiting: dict[str, list[asyncio.Future[None]] | None] = {}

    def try_acquire(self, key: str) -> bool:
        """Take the key's turn now if nobody has it (no await needed)."""
        if key in self._waiting:
            return False
        self._waiting[key] = None
        return True

    async def acquire(self, key: str) -> None:
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
        waiters = self._waiting[key]
        while waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(None)  # the key passes to the next in line
                return
        del self._waiting[key]


def message_types(fn: Callable[..., Any], role: str) -> tuple[type[Message], ...]:
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
