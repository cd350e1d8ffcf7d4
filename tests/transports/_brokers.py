"""What the tests that run on every broker share: the broker under test (its URL, namespace and
the options ``app.connect`` needs there) with a plain client of it that publishes and consumes
raw messages and CloudEvents SDK ones, two services on any store (``cinema`` publishes seats and
sends payments to ``payments``), the inbox's redelivery scenario, workers run while a block
runs, and waiting on a condition or a port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidings import App, Command, Context, Event, Refused
from tidings.transports import InboxUnreadable, Routes
from tidings.transports.inbox import UNREADABLE_STREAM

if TYPE_CHECKING:
    from cloudevents.core.base import BaseCloudEvent

#: the brokers every test of this kind runs on (``any_broker`` in conftest.py)
BROKERS = ("rabbitmq", "nats", "kafka")


class Reserved(Event, type_name="xb.Reserved"):
    screening: str
    seat: int


class Released(Event, type_name="xb.Released"):
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
        plain = []
        for headers, body in messages:
            if self.kind == "kafka":
                headers = {
                    "ce_" + k[3:] if k.startswith("ce-") else k: v for k, v in headers.items()
                }
            content_type = (
                "application/json" if self.kind == "rabbitmq" and "ce-id" in headers else None
            )
            plain.append(PlainMessage(headers, body, content_type))
        await self.send_plain(topic, stream, plain)

    async def publish_cloud_event(self, topic: str, stream: str, event: BaseCloudEvent) -> None:
        """Publish ``event`` to ``topic``, keyed by ``stream``, as the CloudEvents SDK's binding
        for this broker makes it (NATS has none: its HTTP binding) and the broker's own client
        sends it."""
        if self.kind == "rabbitmq":
            from cloudevents.core.bindings import rabbitmq

            amqp = rabbitmq.to_binary_event(event)
            message = PlainMessage(dict(amqp.headers), amqp.body, amqp.content_type)
        elif self.kind == "kafka":
            from cloudevents.core.bindings import kafka

            record = kafka.to_binary_event(event)
            message = PlainMessage({k: v.decode() for k, v in record.headers.items()}, record.value)
        else:
            from cloudevents.core.bindings import http

            wire = http.to_binary_event(event)
            message = PlainMessage(dict(wire.headers), wire.body)
        await self.send_plain(topic, stream, [message])

    def parse_cloud_event(self, message: PlainMessage) -> BaseCloudEvent:
        """``message`` read by the CloudEvents SDK's binding for this broker."""
        if self.kind == "rabbitmq":
            from cloudevents.core.bindings import rabbitmq

            amqp = rabbitmq.RabbitMQMessage(message.headers, message.content_type, message.body)
            return rabbitmq.from_binary_event(amqp)
        if self.kind == "kafka":
            from cloudevents.core.bindings import kafka

            headers = {k: v.encode() for k, v in message.headers.items()}
            return kafka.from_binary_event(kafka.KafkaMessage(headers, message.key, message.body))
        from cloudevents.core.bindings import http

        # NATS headers of its own (Nats-Msg-Id) are no HTTP binding's business.
        ce = {k: v for k, v in message.headers.items() if k.startswith(("ce-", "content-type"))}
        return http.from_binary_event(http.HTTPMessage(ce, message.body))

    async def send_plain(self, topic: str, stream: str, messages: Sequence[PlainMessage]) -> None:
        """Send ``messages`` to ``topic`` in order, keyed by ``stream``, with the broker's own
        client."""
        if self.kind == "rabbitmq":
            await self._rabbitmq(topic, messages)
        elif self.kind == "nats":
            await self._nats(topic, stream, messages)
        else:
            await self._kafka(topic, stream, messages)

    @asynccontextmanager
    async def plain_consumer(
        self, topic: str
    ) -> AsyncIterator[Callable[[], Awaitable[PlainMessage]]]:
        """A consumer of ``topic`` with the broker's own client, subscribed when the block
        starts (on NATS, once a link made the namespace's stream); what it yields returns the
        next message, acknowledged, waiting up to 20 s."""
        if self.kind == "rabbitmq":
            consume = self._rabbitmq_consumer(topic)
        elif self.kind == "nats":
            consume = self._nats_consumer(topic)
        else:
            consume = self._kafka_consumer(topic)
        async with consume as receive:
            yield receive

    async def _rabbitmq(self, topic: str, messages: Sequence[PlainMessage]) -> None:
        import aio_pika

        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(f"{self.namespace}.events")
            for m in messages:
                message = aio_pika.Message(
                    m.body, headers=dict(m.headers), content_type=m.content_type
                )
                await exchange.publish(message, routing_key=topic)

    @asynccontextmanager
    async def _rabbitmq_consumer(
        self, topic: str
    ) -> AsyncIterator[Callable[[], Awaitable[PlainMessage]]]:
        import aio_pika

        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            events = await channel.declare_exchange(
                f"{self.namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(f"{self.namespace}.plain", durable=True)
            await queue.bind(events, routing_key=topic)
            got: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def arrived() -> bool:
                message = await queue.get(fail=False)
                got.extend([message] if message is not None else [])
                return bool(got)

            async def receive() -> PlainMessage:
                await wait_until(arrived)
                message = got.pop()
                await message.ack()
                headers = {k: str(v) for k, v in (message.headers or {}).items()}
                return PlainMessage(headers, message.body, message.content_type)

            yield receive

    async def _nats(self, topic: str, stream: str, messages: Sequence[PlainMessage]) -> None:
        import nats

        from tidings.transports.nats import NATS

        subject = NATS(self.url, namespace=self.namespace).subject("topic", topic, stream)
        client = await nats.connect(self.url)
        try:
            # Plain core-NATS publishes bypass JetStream's dedup window: the inbox dedups.
            for m in messages:
                await client.publish(subject, m.body, headers=dict(m.headers))
            await client.flush()
        finally:
            await client.close()

    @asynccontextmanager
    async def _nats_consumer(
        self, topic: str
    ) -> AsyncIterator[Callable[[], Awaitable[PlainMessage]]]:
        import nats

        from tidings.transports.nats import NATS

        client = await nats.connect(self.url)
        try:
            plain = await client.jetstream().pull_subscribe(
                f"{self.namespace}.ev.{topic}.*",
                durable="plain",
                stream=NATS(self.url, namespace=self.namespace).stream,
            )

            async def receive() -> PlainMessage:
                (message,) = await plain.fetch(1, timeout=20)
                await message.ack()
                return PlainMessage(dict(message.headers or {}), message.data)

            yield receive
        finally:
            await client.close()

    async def _kafka(self, topic: str, stream: str, messages: Sequence[PlainMessage]) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self._kafka_servers, acks="all")
        await producer.start()
        try:
            for m in messages:
                headers = [(k, v.encode()) for k, v in m.headers.items()]
                await producer.send_and_wait(
                    self._kafka_topic(topic), m.body, key=stream.encode(), headers=headers
                )
        finally:
            await producer.stop()

    @asynccontextmanager
    async def _kafka_consumer(
        self, topic: str
    ) -> AsyncIterator[Callable[[], Awaitable[PlainMessage]]]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self._kafka_topic(topic),
            bootstrap_servers=self._kafka_servers,
            group_id="plain",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:

            async def receive() -> PlainMessage:
                record = await asyncio.wait_for(consumer.getone(), 20)
                headers = {k: v.decode() for k, v in record.headers}
                return PlainMessage(headers, record.value, key=record.key)

            yield receive
        finally:
            await consumer.stop()

    @property
    def _kafka_servers(self) -> str:
        return self.url.removeprefix("kafka://")

    def _kafka_topic(self, topic: str) -> str:
        return f"{self.namespace}.ev.{topic}"


@dataclass(frozen=True)
class PlainMessage:
    """A message as a broker's own client carries it: headers named as on that broker (Kafka:
    ``ce_id``), the body, AMQP's content type, Kafka's record key."""

    headers: dict[str, str]
    body: bytes
    content_type: str | None = None
    key: bytes | None = None


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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def listening(port: int) -> bool:
    """Whether something accepts connections on loopback ``port``."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


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
    """The sender: publishes ``Reserved`` and ``Released`` to the topic ``cinema.seats``,
    sends ``Pay`` to ``payments``."""
    routes = Routes().publish(Reserved, Released, topic="cinema.seats").send(Pay, to="payments")
    return broker.connect(App("cinema", store=store), routes)


def payments(store: str, broker: BrokerUnderTest, seen: list[tuple[str, int]]) -> App:
    """The receiver: takes only ``Reserved`` from the topic; its subscriber ``ledger`` appends
    each to ``seen``; it pays ``Pay`` (refused when there is nothing to pay)."""
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
