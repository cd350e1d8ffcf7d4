"""What the tests that run on every broker share: the broker under test (its URL, namespace and
the options ``app.connect`` needs there) with a plain client of it publishing raw messages, two
services on any store (``cinema`` publishes seats and sends payments to ``payments``), the
inbox's redelivery scenario, workers run while a block runs, and waiting on a condition."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from tidings import App, Command, Context, Event, Refused
from tidings.transports import InboxUnreadable, Routes
from tidings.transports.inbox import UNREADABLE_STREAM

#: the brokers every test of this kind runs on (``any_broker`` in conftest.py)
BROKERS = ("rabbitmq", "nats", "kafka")


class Reserved(Event, type_name="xb.Reserved"):
    screening: str
    seat: int


class Pay(Command, type_name="xb.Pay"):
    order: str
    cents: int


@dataclass(frozen=True)
class BrokerUnderTest:
    """A broker with a namespace of the test's own."""

    kind: str
    url: str
    namespace: str
    options: dict[str, Any] = field(default_factory=dict)

    def connect(self, app: App, routes: Routes) -> App:
        """``app`` connected to this broker by ``routes``."""
        app.connect(self.url, routes, namespace=self.namespace, **self.options)
        return app

    async def publish_plain(
        self, topic: str, stream: str, messages: Sequence[tuple[dict[str, str], bytes]]
    ) -> None:
        """Publish ``(headers, body)`` messages to ``topic`` in order, keyed by ``stream``, with
        the broker's own client, as a service that is not tidings would (headers named as on
        HTTP: ``ce-id``; on Kafka they go out as its binding names them, ``ce_id``)."""
        if self.kind == "rabbitmq":
            await self._rabbitmq(topic, messages)
        elif self.kind == "nats":
            await self._nats(topic, stream, messages)
        else:
            await self._kafka(topic, stream, messages)

    async def _rabbitmq(self, topic: str, messages: Sequence[tuple[dict[str, str], bytes]]) -> None:
        import aio_pika

        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(f"{self.namespace}.events")
            for headers, body in messages:
                content_type = "application/json" if "ce-id" in headers else None
                message = aio_pika.Message(body, headers=dict(headers), content_type=content_type)
                await exchange.publish(message, routing_key=topic)

    async def _nats(
        self, topic: str, stream: str, messages: Sequence[tuple[dict[str, str], bytes]]
    ) -> None:
        import nats

        from tidings.transports.nats import NATS

        subject = NATS(self.url, namespace=self.namespace).subject("topic", topic, stream)
        client = await nats.connect(self.url)
        try:
            # Plain core-NATS publishes bypass JetStream's dedup window: the inbox dedups.
            for headers, body in messages:
                await client.publish(subject, body, headers=dict(headers))
            await client.flush()
        finally:
            await client.close()

    async def _kafka(
        self, topic: str, stream: str, messages: Sequence[tuple[dict[str, str], bytes]]
    ) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.url.removeprefix("kafka://"), acks="all")
        await producer.start()
        try:
            for headers, body in messages:
                binding = [
                    ("ce_" + k[3:] if k.startswith("ce-") else k, v.encode())
                    for k, v in headers.items()
                ]
                await producer.send_and_wait(
                    f"{self.namespace}.ev.{topic}", body, key=stream.encode(), headers=binding
                )
        finally:
            await producer.stop()


def cloud_event(
    event_id: str, type_name: str, stream: str, data: object
) -> tuple[dict[str, str], bytes]:
    """The headers and body of a CloudEvent in binary mode, as another service makes it."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": type_name,
        "ce-source": "elsewhere",
        "ce-subject": stream,
    }
    return headers, json.dumps(data).encode()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Return once ``check()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(*apps: App) -> AsyncIterator[None]:
    """Each App's worker (subscriptions, relay and inbox) runs while the block runs."""
    workers = [app.worker(lease_ttl=3.0) for app in apps]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks)


async def caught_up(app: App, subscription: str) -> bool:
    """Whether ``app``'s ``subscription`` has handled everything in its log so far."""
    try:
        await app.caught_up(subscription, await app.position(), timeout=0.01)
    except TimeoutError:
        return False
    return True


async def relayed(app: App) -> bool:
    """Whether ``app``'s relay checkpoint is past everything it routes (the broker confirmed
    every one)."""
    (state,) = await app.subscriptions.list(f"relay:{app.name}")
    return state.partitions[0].pending == 0


def cinema(store: str, broker: BrokerUnderTest) -> App:
    """The sender: publishes ``Reserved`` to the topic ``cinema.seats``, sends ``Pay`` to
    ``payments``."""
    routes = Routes().publish(Reserved, topic="cinema.seats").send(Pay, to="payments")
    return broker.connect(App("cinema", store=store), routes)


def payments(store: str, broker: BrokerUnderTest, seen: list[tuple[str, int]]) -> App:
    """The receiver: its subscriber ``ledger`` appends each ``Reserved`` to ``seen``; it pays
    ``Pay`` (refused when there is nothing to pay)."""
    app = broker.connect(App("payments", store=store), Routes().subscribe("cinema.seats", Reserved))

    @app.subscriber("ledger")
    async def ledger(event: Reserved, ctx: Context) -> None:
        seen.append((event.screening, event.seat))

    @app.command
    async def pay(cmd: Pay, ctx: Context) -> str:
        if cmd.cents <= 0:
            raise Refused("nothing to pay", code="empty")
        return f"paid-{cmd.order}"

    return app


async def redelivered_once_and_malformed_kept(
    receiver: App, broker: BrokerUnderTest, seen: list[tuple[str, int]]
) -> None:
    """A CloudEvent published three times by a plain client, in one batch and again later, is
    recorded and handled once; a malformed message is kept, once, with its cause and raw bytes.
    ``receiver`` is ``payments`` (not yet opened) and ``seen`` its subscriber's list."""

    def reserved(event_id: str, seat: int) -> tuple[dict[str, str], bytes]:
        data = {"screening": "s9", "seat": seat}
        return cloud_event(event_id, Reserved.__type_name__, "screening-9", data)

    malformed = ({"x": "1"}, b"\x00not json")
    first = reserved("evt-1", 7)

    async def seen_all(count: int) -> None:
        async def check() -> bool:
            return len(seen) >= count and await caught_up(receiver, "ledger")

        await wait_until(check)

    async with receiver:
        await receiver.links[0].open()  # its queue exists: nothing published is lost
        topic, stream = "cinema.seats", "screening-9"
        await broker.publish_plain(topic, stream, [first, first, first, malformed])
        await broker.publish_plain(topic, stream, [reserved("evt-2", 8)])
        async with running(receiver):
            await seen_all(2)
            # Long after it was recorded, the same message once more, and the malformed one.
            await broker.publish_plain(topic, stream, [first, malformed, reserved("evt-3", 9)])
            await seen_all(3)
        recorded = await receiver.read_stream(stream)
        kept = await receiver.read_stream(UNREADABLE_STREAM)
    assert seen == [("s9", 7), ("s9", 8), ("s9", 9)]
    assert [e.id for e in recorded] == ["evt-1", "evt-2", "evt-3"]
    (unreadable,) = kept
    assert isinstance(unreadable.message, InboxUnreadable)
    assert unreadable.message.body == b"\x00not json"
    assert "ce-specversion" in unreadable.message.cause
