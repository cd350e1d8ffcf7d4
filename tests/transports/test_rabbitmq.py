"""Two services with their own SQLite files talking over the real RabbitMQ: events fan out to
subscribers, sent commands reach their one handler and their outcomes come back, a redelivered
message is recorded once, order per stream holds, a malformed message is kept, and plain
aio-pika clients and the official CloudEvents SDK read and write the wire format."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import pytest

from tidings import App, Command, Context, Event, Refused
from tidings.transports import InboxUnreadable, Routes
from tidings.transports.inbox import UNREADABLE_STREAM


class SeatReserved(Event, type_name="tx.SeatReserved"):
    screening: str
    seat: int


class SeatReleased(Event, type_name="tx.SeatReleased"):
    screening: str
    seat: int


class RequestPayment(Command, type_name="tx.RequestPayment"):
    order: str
    cents: int


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Return once ``check()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(*apps: App) -> AsyncIterator[None]:
    workers = [app.worker(lease_ttl=3.0) for app in apps]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks)


def cinema(tmp_path: Path, url: str, namespace: str) -> App:
    app = App("cinema", store=f"sqlite:///{tmp_path / 'cinema.db'}")
    routes = (
        Routes()
        .publish(SeatReserved, SeatReleased, topic="cinema.seats")
        .send(RequestPayment, to="payments")
    )
    app.connect(url, routes, namespace=namespace)
    return app


def payments(
    tmp_path: Path, url: str, namespace: str, seen: list[tuple[str, int]] | None = None
) -> App:
    app = App("payments", store=f"sqlite:///{tmp_path / 'payments.db'}")
    app.connect(url, Routes().subscribe("cinema.seats", SeatReserved), namespace=namespace)

    @app.subscriber("ledger")
    async def ledger(event: SeatReserved, ctx: Context) -> None:
        if seen is not None:
            seen.append((event.screening, event.seat))

    @app.command
    async def charge(cmd: RequestPayment, ctx: Context) -> str:
        if cmd.cents <= 0:
            raise Refused("nothing to pay", code="empty")
        return f"paid-{cmd.order}"

    return app


async def test_events_cross_over_in_order_per_stream(
    tmp_path: Path, amqp_url: str, namespace: str
) -> None:
    seen: list[tuple[str, int]] = []
    a = cinema(tmp_path, amqp_url, namespace)
    b = payments(tmp_path, amqp_url, namespace, seen)
    async with a, b, running(a, b):
        # The subscriber's queue exists before anything is published.
        await asyncio.wait_for(b.links[0].open(), 10)
        for seat in range(40):
            await a.publish(SeatReserved(f"s{seat % 4}", seat), stream=f"screening-{seat % 4}")
        await a.publish(SeatReleased("s0", 1), stream="screening-0")

        async def all_seen() -> bool:
            return len(seen) >= 40

        await wait_until(all_seen)
        await wait_until(lambda: _caught_up(b, "ledger"))
    assert sorted(seen) == sorted((f"s{n % 4}", n) for n in range(40))
    for screening in range(4):
        seats = [seat for name, seat in seen if name == f"s{screening}"]
        assert seats == sorted(seats), "order per stream was not kept"
        stream = await b.read_stream(f"screening-{screening}")
        assert [e.message.seat for e in stream] == seats
        # the same message ids as the sender's log
        sent = await a.read_stream(f"screening-{screening}")
        assert [e.id for e in stream] == [e.id for e in sent if isinstance(e.message, SeatReserved)]
    # SeatReleased is relayed, but payments takes only SeatReserved from the topic.
    assert await b.read_stream("screening-0") and all(
        isinstance(e.message, SeatReserved) for e in await b.read_stream("screening-0")
    )


async def _caught_up(app: App, subscription: str) -> bool:
    try:
        await app.caught_up(subscription, await app.position(), timeout=0.01)
    except TimeoutError:
        return False
    return True


async def test_sent_command_outcome_comes_back(
    tmp_path: Path, amqp_url: str, namespace: str
) -> None:
    a = cinema(tmp_path, amqp_url, namespace)
    b = payments(tmp_path, amqp_url, namespace)
    assert a.validate() == []  # RequestPayment is handled elsewhere: no wiring problem
    async with a, b, running(a, b):
        ticket = await a.send(RequestPayment("o1", 1200))
        refused = await a.send(RequestPayment("o2", 0))
        assert await ticket.result(timeout=15) == "paid-o1"
        outcome = await refused.outcome(timeout=15)
        assert (outcome.status, outcome.reason, outcome.code) == (
            "refused",
            "nothing to pay",
            "empty",
        )
        with pytest.raises(Refused):
            await refused.result(timeout=1)
    # the command was handled in payments, once
    assert (await b.outcome(ticket.message_id)).status == "succeeded"
    assert [e.id for e in await b.read_stream(ticket.stream)] == [ticket.message_id]


async def test_redelivery_is_recorded_once_and_malformed_is_kept(
    tmp_path: Path, amqp_url: str, namespace: str
) -> None:
    seen: list[tuple[str, int]] = []
    b = payments(tmp_path, amqp_url, namespace, seen)
    async with b, running(b):
        await asyncio.wait_for(b.links[0].open(), 10)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(f"{namespace}.events")
            headers = {
                "ce-specversion": "1.0",
                "ce-id": "evt-1",
                "ce-type": "tx.SeatReserved",
                "ce-source": "elsewhere",
                "ce-subject": "screening-9",
            }
            body = json.dumps({"screening": "s9", "seat": 7}).encode()
            for _ in range(3):
                await exchange.publish(
                    aio_pika.Message(body, headers=dict(headers), content_type="application/json"),
                    routing_key="cinema.seats",
                )
            await exchange.publish(
                aio_pika.Message(b"\x00not json", headers={"x": "1"}), "cinema.seats"
            )
            after = {**headers, "ce-id": "evt-2"}
            await exchange.publish(
                aio_pika.Message(
                    json.dumps({"screening": "s9", "seat": 8}).encode(), headers=after
                ),
                routing_key="cinema.seats",
            )

            async def both_seen() -> bool:
                return len(seen) >= 2

            await wait_until(both_seen)
            await wait_until(lambda: _caught_up(b, "ledger"))
    assert seen == [("s9", 7), ("s9", 8)]
    assert [e.id for e in await b.read_stream("screening-9")] == ["evt-1", "evt-2"]
    (kept,) = await b.read_stream(UNREADABLE_STREAM)
    assert isinstance(kept.message, InboxUnreadable)
    assert kept.message.body == b"\x00not json"
    assert "ce-specversion" in kept.message.cause
