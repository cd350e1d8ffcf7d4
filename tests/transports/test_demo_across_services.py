"""``tidings demo --transport``: the cinema story as three worker processes (cinema, payments,
notifications), each with its own SQLite file, over each broker: RabbitMQ, NATS JetStream, Kafka
(a tansu the demo starts). The invariants are read again here from the three stores, not from the
demo's printout, and the run's broker objects are gone afterwards."""

from __future__ import annotations

import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from _brokers import BROKERS
from rich.console import Console

from tidings import App
from tidings.examples.cinema.demo import DemoResult
from tidings.examples.cinema.split_demo import emails_sent, run_split_demo
from tidings.records import DEAD

GUESTS = 30


async def _types(store: Path, *names: str) -> Counter[str]:
    """How many messages of each type the store at ``store`` holds (no handlers: read only)."""
    async with App("reader", store=f"sqlite:///{store}") as app:
        found = Counter[str]()
        after = 0
        while page := await app.store.read_all(after=after, types=list(names), limit=5000):
            found.update(env.type for env in page)
            after = page[-1].global_position
        return found


def _namespace(tmp_path: Path) -> str:
    """The run's own namespace on the broker (its exchanges, queues, stream, topics)."""
    return f"demo-{zlib.crc32(str(tmp_path).encode()):08x}"


async def _run(tmp_path: Path, transport: str, broker: str | None) -> DemoResult:
    started = time.monotonic()
    result = await run_split_demo(
        tmp_path,
        transport,
        broker=broker,
        guests=GUESTS,
        namespace=_namespace(tmp_path),
        console=Console(quiet=True),
    )
    print(f"demo across services on {transport}: {time.monotonic() - started:.1f}s")
    return result


async def _assert_invariants(tmp_path: Path, result: DemoResult) -> None:
    assert result.ok, result.invariants
    assert result.reserved == GUESTS - result.refused and result.reserved > 0
    # The story is the same as in one process: some paid, some left silent, some e-mails dead.
    assert 0 < result.confirmed < result.reserved
    assert result.dead_letters > 0
    assert result.emails_sent_after_repair == result.confirmed

    cinema = await _types(
        tmp_path / "cinema.db",
        "cinema.SeatReserved",
        "cinema.ReservationConfirmed",
        "cinema.SeatReleased",
        "cinema.PaymentReceived",
        "cinema.PaymentFailed",
    )
    payments = await _types(
        tmp_path / "payments.db",
        "cinema.RequestPayment",
        "cinema.PaymentReceived",
        "cinema.PaymentFailed",
    )
    notifications = await _types(tmp_path / "notifications.db", "cinema.ReservationConfirmed")
    # each message crossed the broker once: recorded once at the receiver
    assert payments["cinema.RequestPayment"] == cinema["cinema.SeatReserved"] == result.reserved
    for answer in ("cinema.PaymentReceived", "cinema.PaymentFailed"):
        assert cinema[answer] == payments[answer]
    assert notifications["cinema.ReservationConfirmed"] == cinema["cinema.ReservationConfirmed"]
    # every reservation ended, no seat sold twice
    assert cinema["cinema.ReservationConfirmed"] + cinema["cinema.SeatReleased"] == result.reserved
    async with App("reader", store=f"sqlite:///{tmp_path / 'cinema.db'}") as app:
        reservations = await app.documents("reservations", limit=100_000)
        receipts = await app.documents("receipts", limit=100_000)
    sold = Counter(
        (r["screening"], r["seat"]) for r in reservations.values() if r["status"] == "confirmed"
    )
    assert set(sold.values()) == {1} and sum(sold.values()) == result.confirmed
    assert len(receipts) == result.confirmed
    # the dead letters were repaired in the notifications service: none left, every e-mail sent
    async with App("reader", store=f"sqlite:///{tmp_path / 'notifications.db'}") as app:
        held = await app.dead_letters.list(status=None, limit=10_000)
        assert not [h for h in held if h.status == DEAD]
        audit = await app.store.audit_entries(limit=100)
    assert any(entry.actor == "demo-operator" for entry in audit)
    assert len({*_sent(tmp_path)}) == result.confirmed


def _sent(tmp_path: Path) -> set[str]:
    from tidings.examples.cinema.split import Settings

    return emails_sent(Settings(broker="", namespace="x", directory=tmp_path))


@pytest.fixture(params=BROKERS)
def demo_broker(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Each broker in turn: its kind and URL (Kafka: none, the demo starts a tansu of its own)."""
    if request.param == "kafka":
        request.getfixturevalue("tansu_binary")  # installed, or skipped (failed in CI)
        return "kafka", None
    url_fixture = "amqp_url" if request.param == "rabbitmq" else "nats_url"
    return request.param, request.getfixturevalue(url_fixture)


async def test_demo_across_services(tmp_path: Path, demo_broker: tuple[str, str | None]) -> None:
    transport, url = demo_broker
    result = await _run(tmp_path, transport, url)
    await _assert_invariants(tmp_path, result)
    await _assert_cleaned_up(tmp_path, transport, url)


async def _assert_cleaned_up(tmp_path: Path, transport: str, url: str | None) -> None:
    """The run's queues (RabbitMQ) or JetStream stream (NATS) were deleted; on Kafka, the demo
    ran on a tansu it started (and stopped)."""
    namespace = _namespace(tmp_path)
    if transport == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(f"{namespace}.payments", passive=True)
    elif transport == "nats":
        import nats
        import nats.js.errors

        client = await nats.connect(url)
        try:
            with pytest.raises(nats.js.errors.NotFoundError):
                await client.jetstream().stream_info(namespace)
        finally:
            await client.close()
    else:
        assert (tmp_path / "tansu.log").exists()
