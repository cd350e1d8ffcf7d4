"""The framework's own streams live in a reserved namespace (``$``): they never collide with the
user's, user code cannot write there, and listings show them only when asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tidings import App, Command, Context, Event
from tidings.delivery.policy import RetryPolicy
from tidings.errors import InvalidName, ReservedName
from tidings.workflow import Step, Workflow


class OrderPlaced(Event, type_name="rs.OrderPlaced"):
    order: str


class PaymentReceived(Event, type_name="rs.PaymentReceived"):
    order: str


class ChargeCard(Command, type_name="rs.ChargeCard"):
    order: str


class Ship(Command, type_name="rs.Ship"):
    order: str


class Payment(msgspec.Struct):
    paid: bool = False


def make_app(url: str) -> App:
    app = App("shop", store=url)
    payment = Workflow("payment", state=Payment, key=lambda e: e.order)

    @payment.on(OrderPlaced, starts=True)
    def placed(state: Payment, event: OrderPlaced, wf: Step) -> Payment:
        wf.send(ChargeCard(order=event.order))
        wf.timeout("unpaid", after=60)
        return state

    @payment.on(PaymentReceived)
    def paid(state: Payment, event: PaymentReceived, wf: Step) -> Payment:
        wf.complete()
        return Payment(paid=True)

    app.workflow(payment)

    @app.command
    async def charge(cmd: ChargeCard, ctx: Context) -> str:
        return f"charged {cmd.order}"

    @app.command(policy=RetryPolicy(max_attempts=1))
    async def ship(cmd: Ship, ctx: Context) -> None:
        raise ConnectionError("no courier")

    return app


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        url = f"{base}?schema={request.getfixturevalue('pg_schema')}"
    async with make_app(url) as app:
        yield app


async def test_a_users_stream_named_like_a_workflow_instance_does_not_collide(app: App) -> None:
    await app.publish(OrderPlaced(order="o1"), stream="orders")
    await app.worker().drain()
    # The user's own stream "payment-o1" is not the workflow instance's.
    await app.publish(PaymentReceived(order="o1"), stream="payment-o1")
    await app.worker().drain()
    assert not await app.dead_letters.list()
    assert [e.type for e in await app.read_stream("$wf-payment-o1")] == [
        "tidings.WorkflowStepped",
        "tidings.WorkflowStepped",
    ]
    assert [e.type for e in await app.read_stream("payment-o1")] == ["rs.PaymentReceived"]


async def test_the_frameworks_streams_are_listed_only_when_asked(app: App) -> None:
    await app.publish(OrderPlaced(order="o1"), stream="orders")
    ticket = await app.send(Ship(order="o1"))
    await app.worker().drain()
    assert ticket.stream.startswith("$cmd-rs.Ship-")
    assert (await ticket.outcome()).status == "dead"
    assert await app.streams() == [("orders", 1)]
    internal = dict(await app.streams(internal=True))
    charge = [s for s in internal if s.startswith("$cmd-rs.ChargeCard-")]
    assert len(charge) == 1
    assert internal == {  # the timeout is scheduled, not yet in the log
        "orders": 1,
        "$wf-payment-o1": 1,
        charge[0]: 1,
        ticket.stream: 1,
        f"$failed-{ticket.stream}": 1,
    }
    assert await app.streams(prefix="$wf-", internal=True) == [("$wf-payment-o1", 1)]
    assert await app.store.streams() == [("orders", 1)]


async def test_user_code_cannot_write_to_a_reserved_stream(app: App) -> None:
    reserved = "$wf-payment-o1"
    attempts = [
        app.publish(OrderPlaced(order="o1"), stream=reserved),
        app.append(reserved, [OrderPlaced(order="o1")]),
        app.send(ChargeCard(order="o1"), stream=reserved),
        app.publish(OrderPlaced(order="o1"), stream="$mine", delay=5),
    ]
    for attempt in attempts:
        with pytest.raises(ReservedName) as error:
            await attempt
        assert isinstance(error.value, InvalidName)
        assert "is reserved" in str(error.value) and "a stream of your own" in str(error.value)

    class Inside(Command, type_name="rs.Inside"):
        how: str

    @app.command
    async def inside(cmd: Inside, ctx: Context) -> None:
        ctx.put("seen", cmd.how, True)
        if cmd.how == "publish":
            ctx.publish(OrderPlaced(order="o1"), stream=reserved)
        elif cmd.how == "send":
            ctx.send(ChargeCard(order="o1"), stream=reserved)
        else:
            ctx.append(reserved, [OrderPlaced(order="o1")])

    for how in ("publish", "send", "append"):
        with pytest.raises(ReservedName, match=r"'\$wf-payment-o1' is reserved"):
            await app.invoke(Inside(how=how))
    assert await app.store.last_position() == 0
    assert await app.documents("seen") == {}
    assert await app.streams(internal=True) == []


@pytest.mark.parametrize("watched", [False, True])
async def test_an_empty_stream_name_is_refused_whether_or_not_anyone_watches(
    watched: bool, tmp_path: Path
) -> None:
    from tidings.delivery.observer import Observer

    async with make_app(f"sqlite:///{tmp_path / 'shop.db'}") as app:
        app.observe(Observer() if watched else None)
        for attempt in (
            app.publish(OrderPlaced(order="o1"), stream=""),
            app.send(ChargeCard(order="o1"), stream=""),
        ):
            with pytest.raises(InvalidName, match="is not allowed"):
                await attempt
        assert await app.read_all() == []
