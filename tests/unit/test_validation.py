"""Every message is checked against its declared type on the way in; a bad one writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tidings import App, Command, Context, Decider, Event
from tidings.errors import MessageValidationError


class PlaceOrder(Command):
    order_id: str
    qty: int


class OrderPlaced(Event):
    order_id: str
    customer: str


class Line(msgspec.Struct):
    sku: str
    qty: int


class OrderLines(Event, type_name="shop.OrderLines"):
    order_id: str
    lines: list[Line]


class Note(Command):
    text: str
    #: what the handler should do with a bad value: publish, send, append or schedule it
    how: str = "publish"


BAD_EVENT = OrderPlaced(order_id="o1", customer=None)  # type: ignore[arg-type]
BAD_COMMAND = PlaceOrder(order_id="o1", qty="two")  # type: ignore[arg-type]
#: the notes the ``note`` handler ran for
HANDLED: list[str] = []


def decide(command: PlaceOrder, placed: bool) -> list[OrderPlaced]:
    customer: Any = None if command.order_id == "bad" else "c-1"
    return [OrderPlaced(order_id=command.order_id, customer=customer)]


orders = Decider[bool](
    decide=decide,
    evolve=lambda placed, event: True,
    initial=False,
    stream=lambda command: f"order-{command.order_id}",
)


@pytest.fixture(params=["memory", "sqlite"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'shop.db'}"
    app = App("shop", store=url)
    HANDLED.clear()

    @app.command
    def note(cmd: Note, ctx: Context) -> None:
        HANDLED.append(cmd.text)
        ctx.put("notes", cmd.text, {"text": cmd.text})  # written only if all of it commits
        if cmd.how == "publish":
            ctx.publish(BAD_EVENT)
        elif cmd.how == "schedule":
            ctx.publish(BAD_EVENT, delay=60)
        elif cmd.how == "send":
            ctx.send(BAD_COMMAND)
        elif cmd.how == "append":
            good = OrderPlaced(order_id="o1", customer="c-1")
            ctx.append("order-o1", [good, BAD_EVENT])

    app.decider(orders, PlaceOrder)
    async with app:
        yield app


async def nothing_new(app: App, since: int = 0) -> None:
    """The store holds no message, scheduled message or document beyond ``since``."""
    assert await app.store.last_position() == since
    assert await app.store.next_due() is None
    assert await app.store.documents("notes") == []


def assert_names(error: pytest.ExceptionInfo[MessageValidationError], *parts: str) -> None:
    text = str(error.value)
    for part in parts:
        assert part in text, f"{part!r} not in {text!r}"
    assert "nothing was written" in text


def bad_event_named(error: pytest.ExceptionInfo[MessageValidationError]) -> None:
    assert_names(error, "OrderPlaced", "$.customer", "`str`", "`null`")
    assert error.value.path == "$.customer"
    assert error.value.type_name == "OrderPlaced"


def bad_command_named(error: pytest.ExceptionInfo[MessageValidationError]) -> None:
    assert_names(error, "PlaceOrder", "$.qty", "`int`")
    assert error.value.path == "$.qty"


async def test_publish_refuses_an_event_whose_field_has_the_wrong_type(app: App) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.publish(BAD_EVENT)
    bad_event_named(error)
    await nothing_new(app)


async def test_publish_with_a_delay_schedules_nothing_bad(app: App) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.publish(BAD_EVENT, delay=60)
    bad_event_named(error)
    await nothing_new(app)


async def test_send_refuses_a_bad_command_now_or_later(app: App) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.send(BAD_COMMAND)
    bad_command_named(error)
    with pytest.raises(MessageValidationError):
        await app.send(BAD_COMMAND, delay=60)
    await nothing_new(app)


async def test_append_of_a_good_and_a_bad_event_appends_neither(app: App) -> None:
    good = OrderPlaced(order_id="o1", customer="c-1")
    with pytest.raises(MessageValidationError) as error:
        await app.append("order-o1", [good, BAD_EVENT])
    bad_event_named(error)
    await nothing_new(app)


async def test_an_invoked_command_is_checked_before_its_handler_runs(app: App) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.invoke(BAD_COMMAND)  # a decider's command: decide would not run
    bad_command_named(error)
    with pytest.raises(MessageValidationError) as noted:
        await app.invoke(Note(text=None))  # type: ignore[arg-type]
    assert_names(noted, "Note", "$.text", "`str`")
    assert HANDLED == []
    await nothing_new(app)


async def test_a_deciders_bad_event_is_refused_and_nothing_is_appended(app: App) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.invoke(PlaceOrder(order_id="bad", qty=1))
    bad_event_named(error)
    await nothing_new(app)
    # The stream is not poisoned: a good command on it goes through.
    assert await app.invoke(PlaceOrder(order_id="o1", qty=1)) == [
        OrderPlaced(order_id="o1", customer="c-1")
    ]
    assert [e.message for e in await app.read_stream("order-o1")] == [
        OrderPlaced(order_id="o1", customer="c-1")
    ]


@pytest.mark.parametrize("how", ["publish", "schedule", "send", "append"])
async def test_a_handlers_bad_message_commits_nothing_of_its_unit_of_work(
    app: App, how: str
) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.invoke(Note(text="n1", how=how))
    if how == "send":
        bad_command_named(error)
    else:
        bad_event_named(error)
    assert HANDLED == ["n1"]
    await nothing_new(app)


async def test_the_path_names_a_bad_value_deep_inside_a_message(app: App) -> None:
    bad = OrderLines(order_id="o1", lines=[Line(sku="a", qty=1), Line(sku=None, qty=2)])  # type: ignore[arg-type]
    with pytest.raises(MessageValidationError) as error:
        await app.publish(bad)
    assert_names(error, "OrderLines", "shop.OrderLines", "$.lines[1].sku", "`str`")
    await nothing_new(app)


async def test_a_value_json_cannot_hold_is_refused_naming_its_field(app: App) -> None:
    with pytest.raises(MessageValidationError) as error:
        await app.publish(OrderPlaced(order_id="o1", customer=object()))  # type: ignore[arg-type]
    assert_names(error, "OrderPlaced", "$.customer", "`str`", "unsupported")
    assert error.value.path == "$.customer"
    await nothing_new(app)


def test_the_error_is_a_value_error_and_a_tidings_error() -> None:
    from tidings import TidingsError

    assert issubclass(MessageValidationError, ValueError)
    assert issubclass(MessageValidationError, TidingsError)
