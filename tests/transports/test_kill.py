"""kill -9 of the relay's process and of the consumer's process mid-batch, each started again
(``tidings worker``, as in production), over RabbitMQ, NATS JetStream and Kafka (tansu): nothing
is lost, nothing is recorded or applied twice, and each stream's order is kept from the sender's
log to the receiver's effects."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import BinaryIO

import aio_pika
from _brokers import BrokerUnderTest, wait_until

from tidings import App, Event

APP_FILE = Path(__file__).with_name("_transport_app.py")
STREAMS = 8
PER_STREAM = 250
TOTAL = STREAMS * PER_STREAM


class KillSeat(Event, type_name="kill.SeatReserved"):
    screening: str
    seat: int


def _append(path: Path) -> BinaryIO:
    return open(path, "ab")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def start(
    role: str, db: Path, namespace: str, url: str, log: Path
) -> asyncio.subprocess.Process:
    env = dict(
        os.environ,
        TIDINGS_TX_ROLE=role,
        TIDINGS_TX_DB=str(db),
        TIDINGS_TX_NS=namespace,
        TIDINGS_TX_URL=url,
    )
    with _append(log) as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings",
            "worker",
            f"{APP_FILE}:app",
            "--lease-ttl",
            "2",
            "--batch-size",
            "50",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


async def kill(proc: asyncio.subprocess.Process, log: Path) -> None:
    assert proc.returncode is None, f"exited by itself:\n{_tail(log)}"
    proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), 30)


async def declare_queue(url: str, namespace: str) -> None:
    """Declare the receiver's queue as its worker does: a topic keeps nothing for a queue that
    does not exist yet (a JetStream consumer reads the stream from its start)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        events = await channel.declare_exchange(
            f"{namespace}.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            f"{namespace}.payments", durable=True, arguments={"x-single-active-consumer": True}
        )
        await queue.bind(events, routing_key="cinema.seats")


async def test_kill_relay_and_consumer_lose_and_duplicate_nothing(
    tmp_path: Path, any_broker: BrokerUnderTest
) -> None:
    url, namespace = any_broker.url, any_broker.namespace
    cinema_db, payments_db = tmp_path / "cinema.db", tmp_path / "payments.db"
    sender = App("cinema", store=f"sqlite:///{cinema_db}")
    async with sender:
        for n in range(STREAMS):
            await sender.append(
                f"screening-{n}", [KillSeat(f"s{n}", seat) for seat in range(PER_STREAM)]
            )
    if url.startswith("amqp"):
        await declare_queue(url, namespace)

    receiver = App("payments", store=f"sqlite:///{payments_db}", messages=[KillSeat])
    logs = {role: tmp_path / f"{role}.log" for role in ("cinema", "payments")}
    relay = await start("cinema", cinema_db, namespace, url, logs["cinema"])
    consumer = await start("payments", payments_db, namespace, url, logs["payments"])
    try:
        async with receiver:

            async def recorded_over(count: int) -> bool:
                return await receiver.store.last_position() > count

            async def relayed_over(count: int) -> bool:
                partitions = await sender.store.partitions("relay:cinema")
                return bool(partitions) and partitions[0].position > count

            async with sender:
                await wait_until(lambda: relayed_over(TOTAL // 4), 60)
                await kill(relay, logs["cinema"])
                assert not await relayed_over(TOTAL - 1), "the relay was done before the kill"
                relay = await start("cinema", cinema_db, namespace, url, logs["cinema"])
            await wait_until(lambda: recorded_over(TOTAL // 2), 60)
            await kill(consumer, logs["payments"])
            assert not await recorded_over(TOTAL - 1), "the consumer was done before the kill"
            consumer = await start("payments", payments_db, namespace, url, logs["payments"])

            async def all_applied() -> bool:
                seats = await receiver.documents("seats")
                return sum(len(v) for v in seats.values()) >= TOTAL

            await wait_until(all_applied, 120)
            seats = await receiver.documents("seats")
            log = await receiver.read_all(types=[KillSeat], limit=TOTAL * 2)
    finally:
        for proc in (relay, consumer):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)
    # Every seat applied exactly once, in order per stream.
    assert seats == {f"s{n}": list(range(PER_STREAM)) for n in range(STREAMS)}
    # Every message recorded once in the receiver's log, with the sender's ids and order.
    assert len(log) == TOTAL
    async with sender:
        for n in range(STREAMS):
            sent = [e.id for e in await sender.read_stream(f"screening-{n}")]
            got = [e.id for e in log if e.stream == f"screening-{n}"]
            assert got == sent
