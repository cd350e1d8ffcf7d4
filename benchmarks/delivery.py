"""Delivery by tidings' worker on SQLite: throughput, latency, flatness, poison, beside eventsourcing.

Run by hand (not in CI)::

    python benchmarks/delivery.py                 # 5 rounds, about 4 minutes
    python benchmarks/delivery.py --quick         # 2 rounds, smaller logs, about a minute
    python benchmarks/delivery.py --only latency --rounds 9

Every database is a fresh SQLite file at ``synchronous=FULL`` (tidings' default), except the big
log of ``flat``. Slots (see ``_pairs.py`` for pairs and singles):

* ``drain-1``, ``drain-3``: ``--events`` events over 100 streams are appended first (group commits
  of 1,000: 100 concurrent 10-event ``app.append`` calls); then one worker (``batch_size=500``)
  delivers them to 1 or 3 subscriptions whose async handlers only count. Timed:
  ``await worker.drain()``, start-up included. The value is the log's events per second; with 3
  subscriptions each has handled and checkpointed all of them in that time.
* ``run-1``, ``run-3``: the same, with ``worker.run()`` as a task until every partition
  checkpoint of every subscription is at the last position (polled every millisecond).
* ``latency``: publish→handled at a steady 1,000 events/s for ``--latency-seconds`` after a 0.5 s
  warm-up, with ``worker.run()`` in the same process. The publisher is open-loop: each tick starts
  a task calling ``app.publish`` of one event to the next of 100 streams; latency is the handler's
  clock minus the moment ``app.publish`` was called. Also shown: the publisher's own commit.
* ``es`` (pair of one-shot trials): ``drain-1`` against the ``eventsourcing`` library's
  ``ProcessApplication`` follower (SQLite, ``SingleThreadedRunner``, a policy that counts) timed
  in ``pull_and_process`` over ``--es-events`` events of 100 aggregates (saved 1,000 per save). It
  records its tracking position in a transaction of its own per event, so its rate is flat and a
  smaller log suffices.
* ``flat`` (pair): a new ``start="now"`` subscription catching up the last 10,000 events of a log
  of ``--big`` events (built once per run at NORMAL, then reused and grown by every catch-up)
  against the same on a fresh log of 10,000.
* ``poison`` (pair): 200 streams, one subscription with ``RetryPolicy(max_attempts=3,
  immediate=2)``; in 2 streams (1%) the 5th message always raises, is parked as dead after 3
  attempts and the rest of its stream waits. The value is the healthy streams' events per second
  of ``drain()``, against a clean run of the same. Each poisoned run is checked: 2 dead letters
  with 3 attempts, the rest of their streams waiting, every healthy stream handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System

from _pairs import (
    Floor,
    Measure,
    Pair,
    Sample,
    Single,
    Slot,
    check,
    fresh_file,
    header,
    main,
    one_shot,
    parser,
    percentile,
    scratch,
)
from tidings import App, Context, Event
from tidings.delivery.policy import RetryPolicy

STREAMS = 100
NOTE = "a short payload, about as long as a name"
BATCH_SIZE = 500


class Pinged(Event):
    stream_no: int
    n: int
    note: str


class Ticked(Event):
    seq: int


def url(path: Path, sync: str = "full") -> str:
    return f"sqlite:///{path}" + ("" if sync == "full" else f"?synchronous={sync}")


async def publish_log(
    app: App, events: int, streams: int = STREAMS, prefix: str = "s"
) -> list[int]:
    """``events`` events over ``streams`` streams in group commits of 1,000 (100 concurrent
    10-event appends, the streams taking turns); returns how many each stream got."""
    counts = [0] * streams
    done = call = 0
    while done < events:
        calls: list[Awaitable[Any]] = []
        while len(calls) < 100 and done < events:
            stream_no, size = call % streams, min(10, events - done)
            first = counts[stream_no]
            batch = [Pinged(stream_no=stream_no, n=first + i, note=NOTE) for i in range(size)]
            calls.append(app.append(f"{prefix}-{stream_no}", batch))
            counts[stream_no] += size
            done, call = done + size, call + 1
        await asyncio.gather(*calls)
    return counts


def counting_app(
    store: str, subs: int, start: str, prefix: str
) -> tuple[App, list[int], list[str]]:
    """An app whose ``subs`` subscriptions only count the events they handle."""
    app = App("bench", store=store)
    counts = [0] * subs
    names = [f"{prefix}-sub-{i}" for i in range(subs)]
    for index, name in enumerate(names):

        def make(index: int) -> Callable[[Pinged, Context], Awaitable[None]]:
            async def on_pinged(e: Pinged, ctx: Context) -> None:
                counts[index] += 1

            return on_pinged

        app.subscriber(name, start=start)(make(index))
    return app, counts, names


async def at_end(app: App, names: list[str], last: int) -> bool:
    for name in names:
        parts = await app.store.partitions(name)
        if not parts or any(p.position < last for p in parts):
            return False
    return True


# --- throughput --------------------------------------------------------------------------------


async def deliver(store: str, events: int, subs: int, continuous: bool, *,
                  start: str = "beginning", prefix: str = "s") -> Sample:  # fmt: skip
    """Time one worker delivering ``events`` new events to ``subs`` counting subscriptions:
    ``drain()``, or ``run()`` until every checkpoint is at the end. A ``start="now"``
    subscription is set up before the events are published, the others after."""
    app, counts, names = counting_app(store, subs, start, prefix)
    async with app:
        if start == "now":
            await app.worker(batch_size=BATCH_SIZE).drain()
        await publish_log(app, events, prefix=prefix)
        last = await app.store.last_position()
        worker = app.worker(batch_size=BATCH_SIZE)
        began = time.perf_counter()
        if not continuous:
            await worker.drain()
        else:
            task = asyncio.create_task(worker.run())
            deadline = began + 120
            while time.perf_counter() < deadline:
                if min(counts) >= events and await at_end(app, names, last):
                    break
                await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - began
        if continuous:
            worker.stop()
            await task
        ok = counts == [events] * subs and await at_end(app, names, last)
        check(ok, f"delivery to {subs} subs: handled {counts} of {events}")
    return Sample(events, elapsed)


def throughput(events: int, subs: int, continuous: bool) -> Measure:
    async def measure() -> dict[str, float]:
        with fresh_file("deliver") as path:
            sample = await deliver(url(path), events, subs, continuous)
        return {"events/s": sample.rate}

    return measure


def tidings_trial(events: int) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        with fresh_file("deliver") as path:
            return await deliver(url(path), events, 1, False)

    return trial


# --- eventsourcing's follower ------------------------------------------------------------------


class Thing(Aggregate):
    @event("Created")
    def __init__(self, stream_no: int) -> None:
        self.stream_no = stream_no
        self.n = 0

    @event("Pinged")
    def ping(self, n: int, note: str) -> None:
        self.n = n


class EsLeader(Application[Any]):
    pass


class EsCounter(ProcessApplication[Any]):
    count = 0

    def policy(self, domain_event: Any, processing_event: Any) -> None:
        type(self).count += 1


def es_trial(events: int) -> Callable[[], Awaitable[Sample]]:
    """The follower's catch-up of ``events`` events (100 ``Created``, then 1,000 per save)."""

    async def trial() -> Sample:
        with fresh_file("es") as path:
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "ESLEADER_SQLITE_DBNAME": str(path.with_name(f"{path.stem}-leader.db")),
                "ESCOUNTER_SQLITE_DBNAME": str(path.with_name(f"{path.stem}-counter.db")),
            }
            leader = EsLeader(env=env)
            try:
                things = [Thing(stream_no=i) for i in range(STREAMS)]
                n = STREAMS
                while n < events:
                    for thing in things:
                        for _ in range(min(10, events - n)):
                            thing.ping(n=n, note=NOTE)
                            n += 1
                    leader.save(*things)
                total = leader.recorder.max_notification_id()
            finally:
                leader.close()
            runner: SingleThreadedRunner[Any] = SingleThreadedRunner(
                System(pipes=[[EsLeader, EsCounter]]), env=env
            )
            runner.start()
            try:
                follower = runner.get(EsCounter)
                EsCounter.count = 0
                began = time.perf_counter()
                follower.pull_and_process(EsLeader.name)
                elapsed = time.perf_counter() - began
                check(EsCounter.count == total, f"es: processed {EsCounter.count} of {total}")
            finally:
                runner.stop()
        return Sample(total or 0, elapsed)

    return trial


# --- latency -----------------------------------------------------------------------------------


def latency(rate: int, seconds: float) -> Measure:
    """An open-loop publisher at ``rate``/s and a worker running in the same process."""

    async def measure() -> dict[str, float]:
        warm = rate // 2
        total = warm + int(seconds * rate)
        handled: dict[int, float] = {}
        sent: dict[int, float] = {}
        committed: dict[int, float] = {}
        everything = asyncio.Event()
        with fresh_file("latency") as path:
            app = App("latency", store=url(path))

            @app.subscriber("lat")
            async def on_ticked(e: Ticked, ctx: Context) -> None:
                handled[e.seq] = time.perf_counter()
                if len(handled) >= total:
                    everything.set()

            async def publish(seq: int) -> None:
                sent[seq] = time.perf_counter()
                await app.publish(Ticked(seq=seq), stream=f"lat-{seq % STREAMS}")
                committed[seq] = time.perf_counter()

            async with app:
                worker = app.worker(batch_size=BATCH_SIZE)
                task = asyncio.create_task(worker.run())
                pending: set[asyncio.Task[None]] = set()
                start = time.perf_counter()
                for seq in range(total):
                    await asyncio.sleep(max(0.0, start + seq / rate - time.perf_counter()))
                    pending.add(t := asyncio.create_task(publish(seq)))
                    t.add_done_callback(pending.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(everything.wait(), timeout=60)
                worker.stop()
                await task
        done = [s for s in range(warm, total) if s in handled and s in committed]
        check(len(done) == total - warm, f"latency: {len(done)} of {total - warm} handled")
        to_handled = [(handled[s] - sent[s]) * 1000 for s in done]
        span = sent[done[-1]] - sent[done[0]]
        return {
            "p99 ms": percentile(to_handled, 99),
            "p50 ms": percentile(to_handled, 50),
            "max ms": max(to_handled),
            "publisher's commit p99 ms": percentile([(committed[s] - sent[s]) * 1000 for s in done], 99),
            "publish rate /s": (len(done) - 1) / span,
        }  # fmt: skip

    return measure


# --- flatness: catching up the end of a small log and of a big one -----------------------------

FLAT = 10_000
BIG: list[Path] = []


def flat_trial(big: int | None) -> Callable[[], Awaitable[Sample]]:
    """A new ``start="now"`` subscription catching up the next ``FLAT`` events: of a fresh log
    (``big`` None), or of the run's big log (built once with ``big - FLAT`` events at NORMAL)."""

    async def trial() -> Sample:
        if big is None:
            with fresh_file("small") as path:
                return await deliver(url(path), FLAT, 1, False, start="now")
        if not BIG:
            BIG.append(scratch() / "big.db")
            async with App("bench", store=url(BIG[0], "normal")) as app:
                await publish_log(app, big - FLAT)
        prefix = f"f{next(_subscriptions)}"
        return await deliver(url(BIG[0]), FLAT, 1, False, start="now", prefix=prefix)

    return trial


_subscriptions = itertools.count()


# --- poison: 1% of the streams have a message that always fails --------------------------------

POISON_STREAMS, POISONED, POISON_AT = 200, (37, 141), 4
POLICY = RetryPolicy(max_attempts=3, immediate=2, backoff=0.01)


class Poisoned(Exception):
    """What a poisoned message's handler raises, every time."""


def poison_trial(events: int, sick: bool) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        poisoned = set(POISONED) if sick else set()
        handled = [0] * POISON_STREAMS
        with fresh_file("poison") as path:
            app = App("bench", store=url(path))

            @app.subscriber("poison", policy=POLICY)
            async def on_pinged(e: Pinged, ctx: Context) -> None:
                if e.n == POISON_AT and e.stream_no in poisoned:
                    raise Poisoned(f"message {e.n} of stream {e.stream_no}")
                handled[e.stream_no] += 1

            async with app:
                per_stream = await publish_log(app, events, POISON_STREAMS, prefix="p")
                began = time.perf_counter()
                await app.worker(batch_size=BATCH_SIZE).drain()
                elapsed = time.perf_counter() - began
                held = await app.store.held(subscription="poison", limit=events + 1)
        healthy = [s for s in range(POISON_STREAMS) if s not in poisoned]
        dead = {(h.stream, h.attempts) for h in held if h.status == "dead"}
        waiting = sum(h.status == "waiting" for h in held)
        check(all(handled[s] == per_stream[s] for s in healthy), "poison: a healthy stream lags")
        check(dead == {(f"p-{s}", POLICY.max_attempts) for s in poisoned},
              f"poison: dead letters {dead}")  # fmt: skip
        want = sum(per_stream[s] - POISON_AT - 1 for s in poisoned)
        check(waiting == want, f"poison: {waiting} waiting, want {want}")
        return Sample(sum(handled[s] for s in healthy), elapsed)

    return trial


# --- the slots ---------------------------------------------------------------------------------


def slots(events: int, es_events: int, big: int, latency_seconds: float) -> list[Slot]:
    per_sub = Floor(">=", 20_000)
    return [
        Single("drain-1", "drain, 1 sub, SQLite FULL", throughput(events, 1, False), per_sub),
        Single("drain-3", "drain, 3 subs, SQLite FULL (each)", throughput(events, 3, False), per_sub),
        Single("run-1", "run, 1 sub, SQLite FULL", throughput(events, 1, True), per_sub),
        Single("run-3", "run, 3 subs, SQLite FULL (each)", throughput(events, 3, True), per_sub),
        Single("latency", "p99 publish->handled at 1,000/s, SQLite FULL", latency(1000, latency_seconds),
               Floor("<", 50), unit="ms"),
        Pair("es", "drain 1 sub / eventsourcing follower", ("tidings", "eventsourcing"),
             one_shot(tidings_trial(events)), one_shot(es_trial(es_events)), Floor(">=", 3),
             turns=2, warm=0),
        Pair("flat", f"catch-up of 10k: log of {big:,} / log of 10k", ("big", "10k"),
             one_shot(flat_trial(big)), one_shot(flat_trial(None)), Floor(">=", 0.8),
             turns=3, warm=0),
        Pair("poison", "poisoned (1% of streams) / clean, healthy events/s", ("poisoned", "clean"),
             one_shot(poison_trial(events, True)), one_shot(poison_trial(events, False)),
             Floor(">=", 0.8), turns=3, warm=0),
    ]  # fmt: skip


if __name__ == "__main__":
    p = parser(__doc__, rounds=5, seconds=0)
    p.add_argument("--events", type=int, default=20_000, help="events per delivery (default 20k)")
    p.add_argument("--es-events", type=int, default=5_000, help="events for eventsourcing")
    p.add_argument("--big", type=int, default=1_000_000, help="events of flat's big log")
    p.add_argument("--latency-seconds", type=float, default=5.0, help="latency's measured window")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.events, args.es_events, args.big = 2, 10_000, 1_000, 200_000
        args.latency_seconds = 2.0
    logging.getLogger("tidings").setLevel(logging.ERROR)  # the poisoned runs' alerts
    head = header(["msgspec", "eventsourcing"], [f"sqlite    {sqlite3.sqlite_version}"])
    main(slots(args.events, args.es_events, args.big, args.latency_seconds), args, head)
