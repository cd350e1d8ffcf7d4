"""Two services with their own SQLite files talking over Kafka (tansu, a Kafka-compatible broker
started by the test): a plain aiokafka consumer and the CloudEvents SDK's Kafka binding on the
wire format (events and outcomes crossing over, a record produced twice and a malformed one:
test_services_across_brokers.py).

tansu's memory storage refuses InitProducerId, so these tests turn the idempotent producer off
(``idempotent=False``): the inbox still records each message id once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tidings import App, Command, Context, Event, Refused
from tidings.transports import Routes

NS = "kt"


class Booked(Event, type_name="kt.Booked"):
    screening: str
    seat: int


class Charge(Command, type_name="kt.Charge"):
    order: str
    cents: int


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"condition not met within {timeout}s"
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


def sender(tmp_path: Path, url: str) -> App:
    app = App("cinema", store=f"sqlite:///{tmp_path / 'cinema.db'}")
    routes = Routes().publish(Booked, topic="seats").send(Charge, to="payments")
    app.connect(url, routes, namespace=NS, idempotent=False)
    return app


def receiver(tmp_path: Path, url: str, seen: list[tuple[str, int]]) -> App:
    app = App("payments", store=f"sqlite:///{tmp_path / 'payments.db'}")
    app.connect(url, Routes().subscribe("seats", Booked), namespace=NS, idempotent=False)

    @app.subscriber("ledger")
    async def ledger(event: Booked, ctx: Context) -> None:
        seen.append((event.screening, event.seat))

    @app.command
    async def charge(cmd: Charge, ctx: Context) -> str:
        if cmd.cents <= 0:
            raise Refused("nothing to pay", code="empty")
        return f"paid-{cmd.order}"

    return app


async def test_interop_with_plain_aiokafka_and_the_cloudevents_sdk(
    tmp_path: Path, kafka_url: str
) -> None:
    from cloudevents.core.bindings import kafka as ce_kafka
    from cloudevents.core.v1.event import CloudEvent

    seen: list[tuple[str, int]] = []
    a = sender(tmp_path, kafka_url)
    b = receiver(tmp_path, kafka_url, seen)
    servers = kafka_url.removeprefix("kafka://")
    async with a, b:
        await b.links[0].open()
        plain = AIOKafkaConsumer(
            f"{NS}.ev.seats",
            bootstrap_servers=servers,
            group_id="plain",
            auto_offset_reset="earliest",
        )
        await plain.start()
        try:
            async with running(a, b):
                event_id = await a.publish(Booked("s1", 3), stream="screening-1")
                record = await asyncio.wait_for(plain.getone(), 20)
                parsed = ce_kafka.from_binary_event(
                    ce_kafka.KafkaMessage(dict(record.headers), record.key, record.value)
                )
                assert parsed.get_id() == event_id
                assert parsed.get_type() == "kt.Booked"
                assert parsed.get_subject() == "screening-1"
                assert parsed.get_data() == {"screening": "s1", "seat": 3}
                assert record.key == b"screening-1"
                made = CloudEvent(
                    attributes={
                        "id": "sdk-1",
                        "type": "kt.Booked",
                        "source": "/x",
                        "subject": "screening-7",
                    },
                    data={"screening": "s7", "seat": 11},
                )
                wire = ce_kafka.to_binary_event(made)
                producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
                await producer.start()
                try:
                    await producer.send_and_wait(
                        f"{NS}.ev.seats",
                        wire.value,
                        key=b"screening-7",
                        headers=list(wire.headers.items()),
                    )
                finally:
                    await producer.stop()

                async def sdk_event_seen() -> bool:
                    return ("s7", 11) in seen

                await wait_until(sdk_event_seen)
        finally:
            await plain.stop()
        (recorded,) = await b.read_stream("screening-7")
    assert recorded.id == "sdk-1" and recorded.message == Booked("s7", 11)
