"""Handlers' dependencies: partials and callable objects as handlers, collaborators given by the
type a parameter names, swapped in tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

import pytest

from tidings import App, Command, ConfigurationError, Context, Event
from tidings.testing import Harness


class Allocated(Event):
    orderid: str
    sku: str


class Allocate(Command):
    orderid: str
    sku: str


class Notifications(Protocol):
    def send(self, destination: str, message: str) -> None: ...


class Outbox:
    """Notifications kept in a list: what a test looks at."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, destination: str, message: str) -> None:
        self.sent.append((destination, message))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now


def notify(event: Allocated, ctx: Context, notifications: Outbox) -> None:
    notifications.send("stock@example.com", f"{event.orderid}: {event.sku}")


async def allocate(cmd: Allocate, ctx: Context, clock: Clock) -> str:
    ctx.publish(Allocated(cmd.orderid, cmd.sku))
    return f"{cmd.orderid} at {clock.now}"


async def test_a_partial_is_a_subscriber_and_a_command_handler(tmp_path: Path) -> None:
    outbox = Outbox()
    app = App("shop", store=f"sqlite:///{tmp_path / 'shop.db'}")
    app.subscriber("notify")(functools.partial(notify, notifications=outbox))
    app.command(functools.partial(allocate, clock=Clock(7.0)))
    async with app:
        assert await app.invoke(Allocate("o1", "LAMP")) == "o1 at 7.0"
        ticket = await app.send(Allocate("o2", "CHAIR"))
        await app.worker().drain()
        assert (
            await ticket.result(5) == "o2 at 7.0"
        )  # its declared return type, through the partial
    assert outbox.sent == [("stock@example.com", "o1: LAMP"), ("stock@example.com", "o2: CHAIR")]
    assert app.command_handlers[Allocate].name == "partial(allocate)"


async def test_a_callable_object_is_a_handler_its_call_read_for_types_and_async() -> None:
    class Notify:
        def __init__(self, outbox: Outbox) -> None:
            self.outbox = outbox

        async def __call__(self, event: Allocated, ctx: Context) -> None:
            self.outbox.send("stock@example.com", event.sku)

    class Allocator:
        def __call__(self, cmd: Allocate, ctx: Context) -> int:
            ctx.publish(Allocated(cmd.orderid, cmd.sku))
            return 3

    outbox = Outbox()
    app = App("shop")
    app.subscriber("notify")(Notify(outbox))
    app.command(Allocator())
    async with app:
        assert await app.invoke(Allocate("o1", "LAMP")) == 3
        await app.worker().drain()
    assert outbox.sent == [("stock@example.com", "LAMP")]
    assert app.subscribers["notify"].is_async and not app.command_handlers[Allocate].is_async


def make_app(**options: object) -> App:
    app = App("shop", **options)  # type: ignore[arg-type]

    @app.subscriber("notify")
    def notify(event: Allocated, ctx: Context, notifications: Notifications) -> None:
        notifications.send("stock@example.com", event.sku)

    @app.command
    async def allocate(cmd: Allocate, ctx: Context, clock: Clock, retries: int = 3) -> str:
        ctx.publish(Allocated(cmd.orderid, cmd.sku))
        return f"{cmd.orderid} at {clock.now}, {retries} retries"

    return app


async def test_a_handler_is_given_what_the_app_provides_for_its_parameters_types() -> None:
    outbox = Outbox()
    app = make_app(dependencies={Notifications: outbox, Clock: Clock(1.0)})
    assert app.validate() == []
    async with app:
        assert await app.invoke(Allocate("o1", "LAMP")) == "o1 at 1.0, 3 retries"
        ticket = await app.send(Allocate("o2", "CHAIR"))
        await app.worker().drain()
        assert await ticket.result(5) == "o2 at 1.0, 3 retries"
    assert outbox.sent == [("stock@example.com", "LAMP"), ("stock@example.com", "CHAIR")]
    assert app.command_handlers[Allocate].name.endswith("allocate")


async def test_a_test_swaps_a_dependency_for_the_length_of_a_with_block() -> None:
    real, fake = Outbox(), Outbox()
    app = make_app(dependencies={Notifications: real})
    app.dependencies.provide(Clock, Clock(1.0))
    async with Harness().run(app) as harness:
        with (
            app.dependencies.override(Notifications, fake),
            app.dependencies.override(Clock, Clock(2.0)),
        ):
            assert await app.invoke(Allocate("o1", "LAMP")) == "o1 at 2.0, 3 retries"
            await harness.settle()
        assert await app.invoke(Allocate("o2", "CHAIR")) == "o2 at 1.0, 3 retries"
        await harness.settle()
    assert fake.sent == [("stock@example.com", "LAMP")]
    assert real.sent == [("stock@example.com", "CHAIR")]


async def test_a_dependency_nothing_provides_is_a_wiring_problem_and_writes_nothing() -> None:
    app = make_app(dependencies={Clock: Clock(1.0)})
    problems = app.validate()
    assert [p.code for p in problems] == ["dependency-missing"]
    assert "notify needs a Notifications" in problems[0].message
    async with app:
        with pytest.raises(ConfigurationError, match=r"not ready to run.*Notifications"):
            await app.worker().drain()

    bare = make_app()
    async with bare:
        with pytest.raises(ConfigurationError) as raised:
            await bare.invoke(Allocate("o1", "LAMP"))
        assert "allocate needs a Clock (clock)" in str(raised.value)
        assert "dependencies={Clock: ...}" in str(raised.value)
        assert await bare.read_all() == []


def test_providing_something_that_is_not_of_its_type_is_refused() -> None:
    app = App("shop", dependencies={Clock: Clock(1.0)})
    with pytest.raises(ConfigurationError, match="is not a Clock"):
        app.dependencies.provide(Clock, "noon")
    with pytest.raises(ConfigurationError, match="not hashable"):
        app.dependencies.provide([Clock], Clock(2.0))
    with pytest.raises(ConfigurationError, match="is not a Clock"):
        App("shop", dependencies={Clock: 12.0})
    assert app.dependencies.given((("clock", Clock),), "h")["clock"].now == 1.0


def test_a_dependency_where_the_context_goes_is_refused_at_registration() -> None:
    app = App("shop")
    with pytest.raises(ConfigurationError) as raised:

        @app.subscriber("notify")
        def notify(event: Allocated, notifications: Outbox) -> None: ...

    assert "second parameter is given the Context, not a Outbox" in str(raised.value)
    assert "(event, ctx: Context, notifications: Outbox)" in str(raised.value)

    with pytest.raises(ConfigurationError, match="'sender' has no default, so it is a dependency"):

        @app.command
        def allocate(cmd: Allocate, ctx: Context, sender) -> None: ...  # type: ignore[no-untyped-def]


def test_a_partial_in_an_error_is_named_not_a_crash() -> None:
    app = App("shop")
    app.subscriber("notify")(functools.partial(notify, notifications=Outbox()))
    with pytest.raises(ConfigurationError, match=r"already exists \(partial\(notify\)\)"):
        app.subscriber("notify")(functools.partial(notify, notifications=Outbox()))

    def untyped(event, ctx):  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(ConfigurationError, match=r"subscriber partial\(.*untyped\): annotate"):
        app.subscriber("other")(functools.partial(untyped))

    def unresolved(event: Undefined, ctx: Context) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(ConfigurationError, match=r"annotations of partial\(.*unresolved\)"):
        app.subscriber("other")(functools.partial(unresolved))
