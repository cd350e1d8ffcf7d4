"""Refuse and record: "out of stock" is a refusal to the caller and a fact the business keeps.
``Refused(..., record=[events])`` commits those events (and nothing else the handler wrote),
atomically with a sent command's ``refused`` outcome.

Every test runs on a SQLite file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings import App, Command, Context, Decider, Event, Refused
from tidings.testing import given


class Allocate(Command, type_name="refuse.Allocate"):
    sku: str
    qty: int


class Restock(Command, type_name="refuse.Restock"):
    sku: str
    qty: int


class Allocated(Event, type_name="refuse.Allocated"):
    sku: str
    qty: int


class Restocked(Event, type_name="refuse.Restocked"):
    sku: str
    qty: int


class OutOfStock(Event, type_name="refuse.OutOfStock"):
    sku: str


class NotEnough(Refused):
    """A refusal a caller tells apart."""


def decide(command: Allocate | Restock, available: int) -> list[Event]:
    if isinstance(command, Restock):
        return [Restocked(command.sku, command.qty)]
    if command.qty > available:
        raise NotEnough("out of stock", code="out-of-stock", record=[OutOfStock(command.sku)])
    return [Allocated(command.sku, command.qty)]


def evolve(available: int, event: Event) -> int:
    if isinstance(event, Allocated):
        return available - event.qty
    if isinstance(event, Restocked):
        return available + event.qty
    return available


stock = Decider[int](decide, evolve, 0, lambda c: f"product-{c.sku}")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    found = App("shop", store=f"sqlite:///{tmp_path / 'shop.db'}")
    found.decider(stock, Allocate, Restock)
    async with found:
        yield found


async def types(app: App, stream: str) -> list[str]:
    return [env.type for env in await app.read_stream(stream)]


async def test_an_invoked_decider_refuses_and_records(app: App) -> None:
    await app.invoke(Restock("LAMP", 1))
    with pytest.raises(NotEnough, match="out of stock") as refused:
        await app.invoke(Allocate("LAMP", 2))
    assert refused.value.code == "out-of-stock"
    assert await types(app, "product-LAMP") == ["refuse.Restocked", "refuse.OutOfStock"]
    # The kept state knows the stream moved on: the next command appends after the refusal.
    await app.invoke(Allocate("LAMP", 1))
    assert await types(app, "product-LAMP") == [
        "refuse.Restocked",
        "refuse.OutOfStock",
        "refuse.Allocated",
    ]


async def test_a_recorded_refusal_on_a_stale_state_is_decided_again(tmp_path: Path) -> None:
    here = App("shop", store=f"sqlite:///{tmp_path / 's.db'}")
    there = App("shop", store=f"sqlite:///{tmp_path / 's.db'}")
    for each in (here, there):
        each.decider(stock, Allocate, Restock)
    async with here, there:
        await here.invoke(Restock("LAMP", 1))
        await there.invoke(Restock("LAMP", 5))  # behind here's back: 6 available
        await here.invoke(Allocate("LAMP", 3))  # refused on here's kept 1, then decided again
        assert await types(here, "product-LAMP") == ["refuse.Restocked"] * 2 + ["refuse.Allocated"]


async def test_a_sent_command_is_refused_and_its_events_committed_with_the_outcome(
    app: App,
) -> None:
    ticket = await app.send(Allocate("DESK", 1))
    await app.worker().drain()
    outcome = await ticket.outcome(timeout=5)
    assert (outcome.status, outcome.code) == ("refused", "out-of-stock")
    with pytest.raises(NotEnough):
        await ticket.result()
    assert await types(app, "product-DESK") == ["refuse.OutOfStock"]


async def test_a_plain_handler_refuses_and_records_only_what_the_refusal_names(app: App) -> None:
    class Reserve(Command, type_name="refuse.Reserve"):
        sku: str

    @app.command
    async def reserve(command: Reserve, ctx: Context) -> None:
        ctx.put("reservations", command.sku, "held")  # dropped: the command is refused
        raise Refused("closed", record=[OutOfStock(command.sku)], stream=f"shop-{command.sku}")

    with pytest.raises(Refused, match="closed"):
        await app.invoke(Reserve("LAMP"))
    assert await types(app, "shop-LAMP") == ["refuse.OutOfStock"]
    assert await app.get("reservations", "LAMP") is None

    ticket = await app.send(Reserve("DESK"))
    await app.worker().drain()
    assert (await ticket.outcome(timeout=5)).status == "refused"
    assert await types(app, "shop-DESK") == ["refuse.OutOfStock"]


async def test_without_a_stream_the_recorded_events_are_published(app: App) -> None:
    class Ping(Command, type_name="refuse.Ping"):
        sku: str

    @app.command
    def ping(command: Ping, ctx: Context) -> None:
        raise Refused("no", record=[OutOfStock(command.sku)])

    with pytest.raises(Refused):
        await app.invoke(Ping("LAMP"))
    assert await types(app, "refuse.OutOfStock") == ["refuse.OutOfStock"]


async def test_a_refusal_recording_a_command_is_an_error_and_writes_nothing(app: App) -> None:
    class Odd(Command, type_name="refuse.Odd"):
        sku: str

    @app.command
    def odd(command: Odd, ctx: Context) -> None:
        raise Refused("no", record=[Restock(command.sku, 1)])  # type: ignore[list-item]

    with pytest.raises(TypeError, match=r"Refused\(record=...\) takes the events"):
        await app.invoke(Odd("LAMP"))
    assert await app.position() == 0


def test_given_shows_what_a_refusal_records() -> None:
    given(stock).when(Allocate("LAMP", 1)).then_refused(
        code="out-of-stock", recorded=[OutOfStock("LAMP")]
    )
    with pytest.raises(AssertionError, match="expected the refusal to record"):
        given(stock).when(Allocate("LAMP", 1)).then_refused(recorded=[])
