"""Two services with their own SQLite files talking over the real RabbitMQ: plain aio-pika
clients and the official CloudEvents SDK read and write the wire format (the rest:
test_services_across_brokers.py and test_links_across_brokers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika

from tidings import App, Command, Context, Event, Refused
from tidings.transports import Routes


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


async def test_interop_with_plain_aio_pika_and_the_cloudevents_sdk(
    tmp_path: Path, amqp_url: str, namespace: str
) -> None:
    from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
    from cloudevents.core.v1.event import CloudEvent

    seen: list[tuple[str, int]] = []
    a = cinema(tmp_path, amqp_url, namespace)
    b = payments(tmp_path, amqp_url, namespace, seen)
    connection = await aio_pika.connect(amqp_url)
    async with connection, a, b:
        channel = await connection.channel()
        events = await channel.declare_exchange(
            f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        plain = await channel.declare_queue(f"{namespace}.plain", durable=True)
        await plain.bind(events, routing_key="cinema.seats")
        await b.links[0].open()
        async with running(a, b):
            event_id = await a.publish(
                SeatReserved("s1", 3),
                stream="screening-1",
                headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
            )
            # A plain aio-pika consumer reads tidings' event; the SDK parses it.
            message = await _get(plain)
            await message.ack()
            parsed = ce_rabbitmq.from_binary_event(
                ce_rabbitmq.RabbitMQMessage(
                    {k: str(v) for k, v in (message.headers or {}).items()},
                    message.content_type,
                    message.body,
                )
            )
            assert parsed.get_id() == event_id
            assert parsed.get_type() == "tx.SeatReserved"
            assert parsed.get_source() == "cinema"
            assert parsed.get_subject() == "screening-1"
            assert parsed.get_data() == {"screening": "s1", "seat": 3}
            assert parsed.get_extension("correlationid") == event_id
            assert parsed.get_extension("traceparent").startswith("00-aaaa")
            # A CloudEvent made by the SDK and published by a plain client reaches a subscriber.
            made = CloudEvent(
                attributes={
                    "id": "sdk-1",
                    "type": "tx.SeatReserved",
                    "source": "/elsewhere",
                    "subject": "screening-7",
                },
                data={"screening": "s7", "seat": 11},
            )
            wire = ce_rabbitmq.to_binary_event(made)
            await events.publish(
                aio_pika.Message(
                    wire.body, headers=dict(wire.headers), content_type=wire.content_type
                ),
                routing_key="cinema.seats",
            )

            async def sdk_event_seen() -> bool:
                return ("s7", 11) in seen

            await wait_until(sdk_event_seen)
        (recorded,) = await b.read_stream("screening-7")
        assert recorded.id == "sdk-1" and recorded.message == SeatReserved("s7", 11)


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message of ``queue``, waiting up to 15 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        message = await queue.get(fail=False)
        if message is not None:
            return message
        assert loop.time() < deadline, "no message arrived within 15s"
        await asyncio.sleep(0.02)
