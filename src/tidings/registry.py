"""The handler registry: each command type's one handler, the subscribers, and wiring problems."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgspec

from tidings.context import NO_HEADERS, Context, Services, refusal
from tidings.decider import Decider, DeciderHandler
from tidings.delivery.policy import RetryPolicy
from tidings.dependencies import (
    Dependencies,
    Injected,
    Wanted,
    callable_name,
    is_async,
    type_name,
    underlying,
)
from tidings.errors import (
    ConfigurationError,
    DuplicateHandler,
    HandlerNotFound,
    MessageDecodeError,
    Refused,
    WrongExpectedVersion,
)
from tidings.factory import MessageFactory
from tidings.ids import uuid7
from tidings.messages import Command, Event, Message, validate_subscription_name
from tidings.records import Transaction


@dataclass(frozen=True, slots=True)
class CommandHandler:
    """The one handler of a command type."""

    command: type[Command]
    #: runs the command with a Context (a sent command, by the worker; or an invoked one)
    fn: Callable[[Any, Context], Any]
    #: whether ``fn`` returns an awaitable
    is_async: bool
    #: how many times an invoke re-runs the handler after ``WrongExpectedVersion``
    retry_on_conflict: int = 0
    #: retries when the command is sent (a refusal is an answer, never retried)
    policy: RetryPolicy = RetryPolicy()
    #: set when a decider handles the command: it invokes it itself
    decider: DeciderHandler[Any] | None = None
    #: what ``fn`` declares it returns, when a sent command's JSON result decodes to it
    returns: Any = Any

    @property
    def subscription(self) -> str:
        """The name of the subscription that delivers sent commands of this type."""
        return f"cmd:{self.command.__type_name__}"

    @property
    def name(self) -> str:
        return callable_name(self.fn)

    def decode_result(self, data: bytes) -> Any:
        """A sent command's recorded result (JSON), as the type the handler declares it returns."""
        try:
            return msgspec.json.decode(data, type=self.returns)
        except msgspec.ValidationError as exc:
            raise MessageDecodeError(
                f"the result of {self.name} does not decode as its declared return type "
                f"{self.returns!r}: {exc}; correct the annotation, or read the raw JSON in "
                "outcome.result",
                type_name=self.command.__type_name__,
            ) from exc

    async def invoke(
        self,
        command: Command,
        services: Services,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Check the command against its type, run it now and commit what it wrote; return its
        result."""
        services.factory.validate(command)
        message_id = uuid7()
        correlation_id = correlation_id or message_id
        if self.decider is not None:
            return await self.decider.invoke(command, services, message_id, correlation_id)
        conflicts = 0
        while True:
            ctx = Context(
                services.factory,
                services.reader,
                message_id,
                correlation_id,
                headers=NO_HEADERS if headers is None else headers,
            )
            refused: Refused | None = None
            try:
                result = self.fn(command, ctx)
                if self.is_async:
                    result = await result
            except Refused as exc:
                refused, tx = exc, self.refusal(ctx, exc)
            else:
                tx = ctx.writes
            if tx:
                try:
                    await services.committer.commit(tx)
                except WrongExpectedVersion:
                    if conflicts >= self.retry_on_conflict:
                        raise
                    conflicts += 1
                    continue
            if refused is not None:
                raise refused
            return result

    def refusal(self, ctx: Context, refused: Refused) -> Transaction | None:
        """What a refusal raised by ``fn`` commits: the events it records."""
        if self.decider is not None:
            return self.decider.refusal(ctx, refused)
        return refusal(ctx, refused)


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


class Handlers:
    """The handlers of one App. Registering a handler makes its message classes known to
    ``factory``; handlers that take dependencies are given them from ``dependencies``."""

    def __init__(self, factory: MessageFactory, dependencies: Dependencies | None = None) -> None:
        self.factory = factory
        self.dependencies = dependencies if dependencies is not None else Dependencies()
        self.commands: dict[type[Command], CommandHandler] = {}
        self.subscribers: dict[str, Subscriber] = {}
        #: command types another service handles (routed to it by a transport)
        self.elsewhere: set[type[Command]] = set()
        #: leases the worker holds besides handlers (a transport's relay and inbox)
        self.relays: set[str] = set()

    def command(
        self,
        fn: Callable[..., Any],
        *,
        retry_on_conflict: int,
        policy: RetryPolicy | None,
        types: Sequence[type[Message]] = (),
        namespace: Mapping[str, Any] | None = None,
    ) -> None:
        """Register ``fn`` as the handler of ``types``, or else of the command type(s) its first
        parameter names (resolved in its module and in ``namespace``, where it was decorated)."""
        called = self.called(fn, "command handler", namespace)
        for cls in types or message_types(fn, "command handler", namespace):
            if not issubclass(cls, Command):
                raise ConfigurationError(
                    f"{callable_name(fn)} handles {cls.__name__}, which is an Event: events go to "
                    f"subscribers, register it with @app.subscriber('a-name')"
                )
            self.add_command(
                CommandHandler(
                    cls,
                    called,
                    is_async(fn),
                    retry_on_conflict,
                    policy or RetryPolicy(),
                    returns=result_type(fn, namespace),
                )
            )

    def decider(
        self,
        decider: Decider[Any],
        commands: Sequence[type[Command]],
        *,
        retry_on_conflict: int,
        policy: RetryPolicy | None,
        cache: int,
        check_purity: bool = False,
    ) -> None:
        """Register one :class:`DeciderHandler` for ``commands``."""
        if not commands:
            raise ConfigurationError(
                "app.decider(decider, *commands): name the command types it decides"
            )
        if cache < 0:
            raise ConfigurationError("app.decider: cache= is a number of streams, 0 or more")
        handler = DeciderHandler(
            decider, retry_on_conflict=retry_on_conflict, cache=cache, check_purity=check_purity
        )
        returns = Any if decider.result is None else result_type(decider.result)
        for cls in commands:
            if not (isinstance(cls, type) and issubclass(cls, Command)):
                raise ConfigurationError(f"app.decider: {cls!r} is not a Command class")
            self.add_command(
                CommandHandler(
                    cls, handler, True, retry_on_conflict, policy or RetryPolicy(), handler, returns
                )
            )

    def add_command(self, handler: CommandHandler) -> None:
        existing = self.commands.get(handler.command)
        if existing is not None:
            raise DuplicateHandler(
                f"{handler.command.__name__} already has a handler ({existing.name}); a command has "
                f"exactly one recipient. If {handler.name} should react to what happened, make it "
                "a subscriber to the event the first handler publishes"
            )
        self.factory.register(handler.command)
        self.commands[handler.command] = handler

    def subscriber(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        policy: RetryPolicy | None,
        start: str,
        partitions: int,
        types: Sequence[type[Message]] = (),
        namespace: Mapping[str, Any] | None = None,
    ) -> None:
        """Register ``fn`` as the subscriber ``name`` to ``types``, or else to the event type(s)
        its first parameter names (resolved as for :meth:`command`)."""
        called = self.called(fn, f"subscriber {name!r}", namespace)
        events = []
        for cls in types or message_types(fn, "subscriber", namespace):
            if issubclass(cls, Command):
                raise ConfigurationError(
                    f"subscriber {name!r} takes {cls.__name__}, which is a Command: a command has "
                    f"exactly one handler, register it with @app.command"
                )
            if issubclass(cls, Event):
                events.append(cls)
        self.add_subscriber(
            Subscriber(
                name,
                tuple(events),
                called,
                is_async(fn),
                policy or RetryPolicy(),
                start,
                partitions,
            )
        )

    def add_subscriber(self, subscriber: Subscriber) -> None:
        existing = self.subscribers.get(subscriber.name)
        if existing is not None:
            raise ConfigurationError(
                f"a subscriber named {subscriber.name!r} already exists ({callable_name(existing.fn)}); "
                "each subscriber needs its own name, which keys its checkpoint"
            )
        self.factory.register(*subscriber.events)
        self.subscribers[subscriber.name] = subscriber

    def called(
        self, fn: Callable[..., Any], role: str, namespace: Mapping[str, Any] | None
    ) -> Callable[[Any, Context], Any]:
        """``fn`` as invoke and the worker call it, ``(message, ctx)``: given its dependencies
        when it takes any."""
        wanted = dependency_parameters(fn, role, namespace)
        return Injected(fn, wanted, self.dependencies) if wanted else fn

    def forget_states(self) -> None:
        """Drop the streams' states deciders keep (they are not what a new store holds)."""
        for handler in self.commands.values():
            if handler.decider is not None and handler.decider.states is not None:
                handler.decider.states.clear()

    def handler_named(self, type_name: str) -> CommandHandler | None:
        """The handler of the command type stored as ``type_name``, if this App has one."""
        for cls, handler in self.commands.items():
            if cls.__type_name__ == type_name:
                return handler
        return None

    def handler_of(self, command: Command) -> CommandHandler:
        """The handler that carries ``command`` out (raises ``HandlerNotFound``)."""
        handler = self.commands.get(type(command))
        if handler is not None:
            return handler
        if isinstance(command, Event):
            raise TypeError(
                f"{type(command).__name__} is an Event: events are published (app.publish), "
                "not invoked"
            )
        raise HandlerNotFound(
            f"no handler for {type(command).__name__}: register one with @app.command"
        )

    def problems(self) -> list[Problem]:
        """Mistakes in the wiring that would otherwise surface only in production."""
        found = [
            Problem(
                "command-without-handler",
                f"command {cls.__type_name__} has no handler: register one with @app.command, "
                "or it will wait forever when sent",
            )
            for cls in sorted(self.factory.known(), key=lambda c: c.__type_name__)
            if issubclass(cls, Command) and cls not in self.commands and cls not in self.elsewhere
        ]
        handlers = [h.fn for h in self.commands.values()]
        handlers += [s.fn for s in self.subscribers.values()]
        for fn in dict.fromkeys(h for h in handlers if isinstance(h, Injected)):
            found += [
                Problem(
                    "dependency-missing",
                    f"{fn.name} needs a {type_name(key)}, and none was provided: give the App "
                    f"one with App(..., dependencies={{{type_name(key)}: ...}})",
                )
                for key in dict.fromkeys(self.dependencies.missing(fn.wanted))
            ]
        return found


def check_subscription(name: str, start: str, partitions: int) -> None:
    """Raise ``ConfigurationError`` unless these are a subscriber's valid settings."""
    validate_subscription_name(name)
    if start not in ("beginning", "now"):
        raise ConfigurationError(f"start={start!r}: use 'beginning' or 'now'")
    if not 1 <= partitions <= 1024:
        raise ConfigurationError(f"partitions={partitions}: use 1 to 1024")


def is_handler(target: object) -> bool:
    """Whether a registration decorator was given the handler itself (not message types)."""
    return callable(target) and not isinstance(target, type)


def caller_locals() -> dict[str, Any]:
    """The local names of the code that applied a registration decorator (two calls up from
    the caller: past the decorator), where annotations may name classes defined in a function."""
    return dict(sys._getframe(2).f_locals)


def explicit_types(given: object, role: str) -> tuple[type[Message], ...]:
    """The message class, or tuple of classes, given to a decorator, checked."""
    found = given if isinstance(given, tuple) else (given,)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, (Command, Event))):
            raise ConfigurationError(
                f"{role}: {cls!r} is not a Command or Event class; name the message class(es) "
                "it handles, e.g. @app.command(ReserveSeat) or @app.subscriber('email', "
                "(SeatReserved, SeatReleased))"
            )
    if not found:
        raise ConfigurationError(f"{role}: name at least one message class it handles")
    return found


def message_types(
    fn: Callable[..., Any], role: str, namespace: Mapping[str, Any] | None = None
) -> tuple[type[Message], ...]:
    """The message classes named by the annotation of ``fn``'s first parameter.

    Names are looked up in ``namespace`` (the local names where the decorator was applied, so
    classes defined in a function are found under ``from __future__ import annotations``), then
    in ``fn``'s module."""
    params, hints = _parameters(fn, role, namespace)
    hint = hints.get(params[0].name)
    if hint is None:
        raise ConfigurationError(
            f"{role} {callable_name(fn)}: annotate its first parameter with the message class it "
            "handles, e.g. (cmd: ReserveSeat, ctx: Context), or name it in the decorator: "
            "@app.command(ReserveSeat)"
        )
    if typing.get_origin(hint) in (Union, types.UnionType):
        found = typing.get_args(hint)
    else:
        found = (hint,)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise ConfigurationError(
                f"{role} {callable_name(fn)}: {cls!r} is not a Command or Event class"
            )
    return found


def dependency_parameters(
    fn: Callable[..., Any], role: str, namespace: Mapping[str, Any] | None = None
) -> Wanted:
    """The parameters of ``fn`` after ``(message, ctx)`` that have no default: its dependencies,
    each with the type it is annotated with."""
    params, hints = _parameters(fn, role, namespace)
    name = callable_name(fn)
    second = hints.get(params[1].name) if len(params) > 1 else None
    if isinstance(second, type) and not issubclass(Context, second):
        raise ConfigurationError(
            f"{role} {name}: its second parameter is given the Context, not a "
            f"{second.__qualname__}; take dependencies after it: ({params[0].name}, "
            f"ctx: Context, {params[1].name}: {second.__qualname__})"
        )
    wanted = []
    for param in params[2:]:
        if param.default is not param.empty or param.kind in (
            param.VAR_POSITIONAL,
            param.VAR_KEYWORD,
        ):
            continue
        hint = hints.get(param.name)
        if hint is None or param.kind is param.POSITIONAL_ONLY:
            raise ConfigurationError(
                f"{role} {name}: its parameter {param.name!r} has no default, so it is a "
                "dependency: annotate it with the type the App provides it by "
                f"({param.name}: Notifications, with App(..., dependencies={{Notifications: ...}})), "
                "and let it be passed by keyword"
            )
        wanted.append((param.name, hint))
    return tuple(wanted)


def _parameters(
    fn: Callable[..., Any], role: str, namespace: Mapping[str, Any] | None
) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """``fn``'s parameters as it is called, and their annotations (read from the function under
    a partial or a callable object)."""
    name = callable_name(fn)
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise ConfigurationError(f"{role} {name} takes no parameters: write it as (message, ctx)")
    try:
        hints = _type_hints(fn, namespace)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot read the annotations of {name}: {exc}; define the message "
            "class at module level or where the handler is decorated, or name it in the "
            "decorator: @app.command(ReserveSeat), @app.subscriber('a-name', SeatReserved)"
        ) from exc
    return params, hints


def result_type(fn: Callable[..., Any], namespace: Mapping[str, Any] | None = None) -> Any:
    """The type ``fn`` declares it returns, if a JSON result can be decoded to it; else ``Any``
    (plain JSON values)."""
    try:
        returns = _type_hints(fn, namespace).get("return", Any)
        msgspec.json.Decoder(returns)
    except Exception:
        return Any
    return returns


def _type_hints(fn: Callable[..., Any], namespace: Mapping[str, Any] | None) -> dict[str, Any]:
    return typing.get_type_hints(underlying(fn), localns=dict(namespace) if namespace else None)
