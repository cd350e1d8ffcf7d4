"""The App's registration: the methods that make message types, handlers, deciders, workflows,
upcasters, alert callbacks and operator actions known to an App.

A base class of :class:`~tidings.app.App` rather than a collaborator it calls, because a
decorator finds the names local to the code it decorates in its caller's frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from tidings.actions import OperatorAction, OperatorActions, Prefill
from tidings.decider import Decider
from tidings.delivery.alerts import AlertCallback, Alerts
from tidings.delivery.observer import Observer
from tidings.delivery.policy import RetryPolicy
from tidings.errors import ConfigurationError
from tidings.factory import MessageFactory
from tidings.messages import Command, Event, Message, TypeRegistry, Upcaster
from tidings.registry import (
    CommandHandler,
    Handlers,
    Problem,
    Subscriber,
    caller_locals,
    check_subscription,
    explicit_types,
    is_handler,
)
from tidings.workflow import Workflow, WorkflowTimeout

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S")


class Registration:
    """What an App is told of before it runs, kept by the collaborators the App makes."""

    registry: TypeRegistry
    factory: MessageFactory
    handlers: Handlers
    alerts: Alerts
    operator_actions: OperatorActions
    observer: Observer | None

    def register(self, *classes: type[Message]) -> None:
        """Make message classes known (for decoding, validation and the advisor)."""
        self.factory.register(*classes)

    @overload
    def command(
        self,
        message: type[Command] | tuple[type[Command], ...] | None = None,
        /,
        *,
        retry_on_conflict: int = 0,
        policy: RetryPolicy | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def command(self, fn: F, /) -> F: ...

    def command(
        self,
        target: Any = None,
        /,
        *,
        retry_on_conflict: int = 0,
        policy: RetryPolicy | None = None,
    ) -> Any:
        """Register the one handler of a command type: ``@app.command`` reads the type from the
        handler's first parameter's annotation; ``@app.command(ReserveSeat)`` (or a tuple of
        types) names it, for what the annotation cannot say.

        A second handler for the same type raises ``DuplicateHandler``. ``retry_on_conflict``
        re-runs the handler that many times when its appends meet ``WrongExpectedVersion``;
        ``policy`` says how a *sent* command that fails is retried and when it is given up.
        """
        types = (
            () if target is None or is_handler(target) else explicit_types(target, "@app.command")
        )

        def decorate(fn: F, namespace: dict[str, Any]) -> F:
            self.handlers.command(
                fn,
                retry_on_conflict=retry_on_conflict,
                policy=policy,
                types=types,
                namespace=namespace,
            )
            return fn

        if is_handler(target):
            return decorate(target, caller_locals())
        return lambda fn: decorate(fn, caller_locals())

    def subscriber(
        self,
        name: str,
        events: type[Event] | tuple[type[Event], ...] | None = None,
        /,
        *,
        policy: RetryPolicy | None = None,
        start: str = "beginning",
        partitions: int = 8,
        critical: bool = False,
    ) -> Callable[[F], F]:
        """Register a durable, named subscriber for ``events`` (a type or a tuple of types), or
        else for the event type(s) of its first parameter's annotation.

        Any number of subscribers may take the same event type; each sees every event, in order
        per stream, at least once. ``start`` is where a new subscription begins: ``"beginning"``
        (catch up on every recorded event) or ``"now"``. ``partitions`` splits it by stream so
        that several workers can share it (fixed once the subscription exists). A ``critical``
        subscriber's dead letters raise alerts of severity ``critical``.
        """
        check_subscription(name, start, partitions)
        if critical:
            self.alerts.critical.add(name)
        types = () if events is None else explicit_types(events, f"subscriber {name!r}")

        def decorate(fn: F) -> F:
            self.handlers.subscriber(
                name,
                fn,
                policy=policy,
                start=start,
                partitions=partitions,
                types=types,
                namespace=caller_locals(),
            )
            return fn

        return decorate

    def workflow(
        self, workflow: Workflow[Any], *, policy: RetryPolicy | None = None
    ) -> Workflow[Any]:
        """Run a :class:`~tidings.workflow.Workflow`: its steps are delivered like a subscriber's
        (subscription ``workflow:<name>``), from the beginning of the log."""
        events: tuple[type[Event], ...] = tuple(workflow.handlers)
        if workflow.timeouts:
            events += (WorkflowTimeout,)
        if not events:
            raise ConfigurationError(
                f"workflow {workflow.name!r} reacts to nothing: add @{workflow.name}.on(Event)"
            )
        self.handlers.add_subscriber(
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
        check_purity: bool = False,
    ) -> Decider[S]:
        """Handle ``commands`` with a :class:`Decider`: load its stream, decide, append at the
        version loaded. In this process, commands for one stream take turns; a conflict with
        another process is re-decided up to ``retry_on_conflict`` times.

        ``cache`` is how many streams' states this process keeps after committing to them (0: load
        every time): see :class:`~tidings.decider.DeciderHandler`. ``check_purity`` raises
        ``StateMutated`` when ``decide`` changes its state (the state's JSON before and after
        each decide: for tests; ``tidings.testing.Harness`` turns it on).
        """
        self.handlers.decider(
            decider,
            commands,
            retry_on_conflict=retry_on_conflict,
            policy=policy,
            cache=cache,
            check_purity=check_purity,
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
        return dict(self.handlers.commands)

    @property
    def subscribers(self) -> dict[str, Subscriber]:
        """The registered subscribers by name."""
        return dict(self.handlers.subscribers)

    def validate(self) -> list[Problem]:
        """Mistakes in the wiring that would otherwise surface only in production (a worker
        refuses to start with any). What the log holds that nothing handles is
        :meth:`unhandled`."""
        return self.handlers.problems()

    def on_alert(self, callback: AlertCallback) -> AlertCallback:
        """Call ``callback(alert)`` (sync or async) when a message is parked or a command is dead."""
        self.alerts.add(callback)
        return callback

    def observe(self, observer: Observer | None) -> None:
        """Tell ``observer`` of this App's invokes, sends, publishes, new messages and its
        workers' deliveries (None: nobody; see :func:`tidings.ops.instrument`)."""
        self.observer = self.factory.observer = observer

    def operator_action(
        self,
        command: type[Command],
        *,
        label: str,
        prefill: Prefill | None = None,
        mode: str = "invoke",
        name: str | None = None,
    ) -> OperatorAction:
        """Let an operator run ``command`` by hand from the console (docs/console.md)."""
        return self.operator_actions.add(
            command, label=label, prefill=prefill, mode=mode, name=name
        )
