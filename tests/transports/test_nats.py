"""Two services with their own SQLite files talking over the real NATS JetStream: plain nats-py
clients and the CloudEvents SDK on the wire format (the rest: test_services_across_brokers.py
and test_links_across_brokers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest

from tidings import App, Command, Context, Event, Refused
from tidings.transports import Routes
from tidings.transports.nats import NATS


class Reserved(Event, type_name="nt.Reserved"):
    screening: str
    seat: int


class Pay(Command, type_name="nt.Pay"):
    order: str
    cents: int


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
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


def sender(tmp_path: Path, url: str, namespace: str) -> App:
    app = App("cinema", store=f"sqlite:///{tmp_path / 'cinema.db'}")
    routes = Routes().publish(Reserved, topic="cinema.seats").send(Pay, to="payments")
    app.connect(url, routes, namespace=namespace)
    return app


def receiver(
    tmp_path: Path, url: str, namespace: str, seen: list[tuple[str, int]] | None = None
) -> App:
    app = App("payments", store=f"sqlite:///{tmp_path / 'payments.db'}")
    app.connect(url, Routes().subscribe("cinema.seats", Reserved), namespace=namespace)

    @app.subscriber("ledger")
    async def ledger(event: Reserved, ctx: Context) -> None:
        if seen is not None:
            seen.append((event.screening, event.seat))

    @app.command
    async def pay(cmd: Pay, ctx: Context) -> str:
        if cmd.cents <= 0:
            raise Refused("nothing to pay", code="empty")
        return f"paid-{cmd.order}"

    return app


async def test_interop_with_plain_nats_py_and_the_cloudevents_sdk(
    tmp_path: Path, nats_url: str, nats_namespace: str
) -> None:
    from cloudevents.core.bindings import http as ce_http
    from cloudevents.core.v1.event import CloudEvent

    seen: list[tuple[str, int]] = []
    a = sender(tmp_path, nats_url, nats_namespace)
    b = receiver(tmp_path, nats_url, nats_namespace, seen)
    async with a, b:
        await a.links[0].open()
        broker = a.links[0].broker
        assert isinstance(broker, NATS)
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            plain = await js.pull_subscribe(
                f"{nats_namespace}.ev.cinema.seats.*", durable="plain", stream=broker.stream
            )
            async with running(a, b):
                event_id = await a.publish(Reserved("s1", 3), stream="screening-1")
                (message,) = await plain.fetch(1, timeout=15)
                await message.ack()
                headers = {
                    k: v
                    for k, v in (message.headers or {}).items()
                    if k.startswith(("ce-", "content-type"))
                }
                parsed = ce_http.from_binary_event(ce_http.HTTPMessage(headers, message.data))
                assert parsed.get_id() == event_id
                assert parsed.get_type() == "nt.Reserved"
                assert parsed.get_subject() == "screening-1"
                assert parsed.get_data() == {"screening": "s1", "seat": 3}
                assert (message.headers or {})["Nats-Msg-Id"] == event_id
                # An SDK-made CloudEvent published by plain nats-py reaches a subscriber.
                made = CloudEvent(
                    attributes={
                        "id": "sdk-1",
                        "type": "nt.Reserved",
                        "source": "/x",
                        "subject": "screening-7",
                    },
                    data={"screening": "s7", "seat": 11},
                )
                wire = ce_http.to_binary_event(made)
                await js.publish(
                    broker.subject("topic", "cinema.seats", "screening-7"),
                    wire.body,
                    headers={**wire.headers, "Nats-Msg-Id": "sdk-1"},
                )

                async def sdk_event_seen() -> bool:
                    return ("s7", 11) in seen

                await wait_until(sdk_event_seen)
        finally:
            await client.close()
    (recorded,) = await b.read_stream("screening-7")
    assert recorded.id == "sdk-1" and recorded.message == Reserved("s7", 11)


def test_a_nats_url_opens_the_jetstream_transport() -> None:
    from tidings.transports import open_broker

    broker = open_broker("nats://127.0.0.1:4222", namespace="a.b", ack_wait=5.0)
    assert isinstance(broker, NATS)
    assert (broker.stream, broker.ack_wait) == ("a_b", 5.0)
    with pytest.raises(Exception, match="no transport"):
        open_broker("mqtt://127.0.0.1:1883")
