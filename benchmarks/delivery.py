"""Delivery throughput, latency and flatness of tidings' worker, beside the eventsourcing library.

Run by hand (not in CI)::

    .venv/bin/python benchmarks/delivery.py               # 5 rounds, about 4 minutes
    .venv/bin/python benchmarks/delivery.py --quick       # 2 rounds, smaller logs, about 1 minute
    .venv/bin/python benchmarks/delivery.py --only drain-1,es --rounds 9 --per-round
    .venv/bin/python benchmarks/delivery.py --profile drain-1-full   # cProfile of one slot
    .venv/bin/python benchmarks/delivery.py --only poison --rounds 7 --per-round
    .venv/bin/python benchmarks/delivery.py --profile poison-sick    # or poison-clean

To measure another checkout of tidings than the installed one, put its ``src`` first on
``PYTHONPATH``; the header names the source directory and the commit that were measured.

What is measured, all in one run:

* **drain / run**: ``--events`` events (default 20,000) are published first, over 100 streams, as
  group commits of 1,000 events (100 concurrent ``app.append`` calls of 10 events, one per stream,
  which the store commits together). Then one worker (``batch_size=500``) delivers them to ONE or
  to THREE subscriptions whose ``async`` handlers only count. Timed: ``await worker.drain()``
  (``drain-*``), or ``worker.run()`` started as a task until every partition checkpoint of every
  subscription has reached the last position (``run-*``; polled every millisecond through
  ``app.store.partitions``). Both include the worker's start-up (subscription set-up, leases).
  Stores: SQLite with the default ``synchronous=FULL``, SQLite ``?synchronous=normal``, and
  ``memory://``. The rate is the log's events per second: with three subscriptions every
  subscription has handled and checkpointed all of them in that time (three times as many
  handler calls).
* **es-follow**: the ``eventsourcing`` library (SQLite module, its default WAL and FULL) consuming
  the same shape of events (100 aggregates, saved 1,000 events per save) with a
  ``ProcessApplication`` follower in a ``System`` run by ``SingleThreadedRunner``, whose policy only
  counts. Timed: ``follower.pull_and_process(leader)``, the catch-up the runner runs when a leader
  prompts it. Per event, eventsourcing 9.5 does (``system.py``, ``projection.py``,
  ``application.py``, ``sqlite.py``): read notifications ``pull_section_size`` (10) at a time
  (one ``BEGIN; SELECT … LIMIT 10; ROLLBACK`` per section), convert each to a domain event
  (``mapper.to_domain_event``), call the policy, then record the tracking position in a
  transaction of its own: ``BEGIN; INSERT INTO tracking … ON CONFLICT DO UPDATE … RETURNING;
  COMMIT`` — one commit, and at FULL one disk sync, per event. It is given fewer events
  (``--es-events``, default 5,000): its rate is per event and flat, and 20,000 would take 15 s a
  round.
* **lat-***: publish→handled latency at a steady 1,000 events/s for ``--latency-seconds`` (default
  5) after a 0.5 s warm-up, one worker running continuously in the same process. The publisher is
  open-loop: every millisecond tick starts a task that calls ``app.publish`` of one event to the
  next of 100 streams (round robin), so a slow commit does not slow the offered load. Latency is
  ``handled`` (the handler's clock) minus the moment ``app.publish`` was called; ``checkpointed``
  is when the worker's commit of that batch's checkpoint returned (seen by wrapping
  ``app.store.commit`` on the instance: benchmark-side only), and ``from tick`` measures from the
  scheduled tick instead of the call (it adds the time the event loop was busy elsewhere).
* **cmd-***: ``--commands`` (default 5,000) sent commands, each its own stream, whose ``async``
  handler returns a small dict. ``cmd-drain-*``: sent first, then ``worker.drain()`` timed until
  every outcome is ``succeeded`` (checked afterwards; outcomes commit with the checkpoint).
  ``cmd-e2e-*``: with ``worker.run()`` already running, the sends (``asyncio.gather``) and waiting
  on every ``ticket.outcome()`` are timed together.
* **flat-***: a fresh ``start="now"`` subscription catching up the LAST 10,000 events of a log of
  10,000 (a fresh file each time) and of about 1,000,000 (``--big``; built once per run at
  ``synchronous=normal`` in 1,000-event group commits, then reused: every catch-up appends its
  10,000, so it grows by about 300,000 over a default run). Timed: ``worker.drain()``. The two take
  turns within one slot (small, big, big, small, small, big), and the slot's ratio is the median of
  its three pairs' ratios, so that both logs meet the same machine weather.
* **poison-***: a failing message must not slow the healthy streams. ``--events`` events (default
  20,000) over 200 streams (group commits of 1,000: 100 concurrent 10-event appends, the streams
  taking turns), SQLite ``synchronous=FULL``, one subscription with
  ``RetryPolicy(max_attempts=3, immediate=2, backoff=0.01)``, delivered by ``worker.drain()``
  (timed, start-up included, as in ``drain-*``). ``poison-clean``: the handler never fails; rate =
  all events / time. ``poison-sick``: in 2 of the 200 streams (1%) the 5th message always raises;
  it is parked as a dead letter after 3 attempts and the rest of its stream is held as
  ``waiting`` behind it; rate = handled events of the 198 healthy streams / time. With this policy
  all 3 attempts are immediate (``retries_now(1)`` and ``retries_now(2)`` are true, attempt 3 gives
  up), so the backoff is never used and the message is dead within the batch that first reaches
  it: ``drain()`` returning (idle) is the moment every healthy stream is handled and both poisoned
  messages are dead, in both runs. Checked after each poisoned run: exactly 2 dead letters with
  ``attempts == 3`` on the poisoned streams, each poisoned stream's later messages held as
  ``waiting`` and nothing else held, 3 handler calls per poisoned message, 2 ``message-parked``
  alerts (seen by an ``on_alert`` callback; the alert's warning is still logged, to a
  ``NullHandler`` on ``tidings.alerts`` during these runs instead of stderr), every
  healthy stream fully handled, every checkpoint at the end. The clean and poisoned runs take turns
  within one slot (clean, poisoned, poisoned, clean, clean, poisoned), each on a fresh file, and the
  slot's ratio is the median of its three pairs' ratios. ``--profile poison-sick`` (or
  ``poison-clean``) profiles only that side's drains.

Contenders are interleaved: every round runs every slot once, on a fresh database file in the same
directory (except the reused big log), the order rotating from round to round. The table shows the
median over rounds with the min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import importlib.metadata
import itertools
import logging
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System

import tidings
from tidings import App, Command, Context, Event
from tidings.delivery.policy import RetryPolicy
from tidings.store import DEAD, WAITING

# --- messages ----------------------------------------------------------------------------------


class Pinged(Event):
    stream_no: int
    n: int
    note: str


class Ticked(Event):
    seq: int
    sent: float


class DoIt(Command):
    n: int


NOTE = "a short payload, about as long as a name"
STREAMS = 100

# --- measuring ---------------------------------------------------------------------------------

PROFILER: cProfile.Profile | None = None
#: what ``--profile`` asked for: a timer with a key profiles only if its key starts with this
PROFILE_KEY = ""


class Timer:
    """Times one region (and profiles it when ``--profile`` asked for this slot, or for this
    ``key`` within a slot that times more than one contender)."""

    def __init__(self, key: str = "") -> None:
        self.seconds = 0.0
        self.profiled = PROFILER is not None and (not key or key.startswith(PROFILE_KEY))

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.profiled and PROFILER is not None:
            PROFILER.enable()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds = time.perf_counter() - start
            if self.profiled and PROFILER is not None:
                PROFILER.disable()


@dataclass
class Series:
    """One line of the table: one value per round."""

    key: str
    label: str
    unit: str
    section: str
    higher_is_better: bool = True
    values: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.values)

    def best(self) -> float:
        return max(self.values) if self.higher_is_better else min(self.values)


@dataclass(frozen=True)
class Config:
    events: int
    es_events: int
    commands: int
    latency_seconds: float
    rate: int
    flat_events: int
    big: int
    batch_size: int


#: Runs one slot on files next to ``path``; returns one value per series of the slot.
Run = Callable[[Path, Config], Awaitable[list[float]]]


@dataclass
class Slot:
    series: list[Series]
    run: Run


OBSERVED: dict[str, str] = {}
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
CHECKS: list[str] = []


def observe(key: str, conn: sqlite3.Connection | None) -> None:
    """Read back the journal mode and synchronous setting a contender really runs with."""
    if key not in OBSERVED:
        if conn is None:
            OBSERVED[key] = "memory"
            return
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        OBSERVED[key] = f"{journal}/{SYNC_NAMES.get(sync, sync)}"


def observe_app(key: str, app: App) -> None:
    observe(key, getattr(app.store, "_conn", None))


def check(ok: bool, what: str) -> None:
    """Record a failed sanity check (shown under the table) instead of aborting the run."""
    if not ok:
        CHECKS.append(what)
        print(f"CHECK FAILED: {what}", file=sys.stderr, flush=True)


def store_url(path: Path, sync: str) -> str:
    if sync == "memory":
        return "memory://"
    url = f"sqlite:///{path.resolve()}"  # an absolute path: four slashes
    return url if sync == "full" else f"{url}?synchronous={sync}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


async def publish_log(app: App, events: int, start: int = 0) -> None:
    """``events`` events over 100 streams: each group commit is 100 concurrent 10-event appends."""
    per = 10
    done = 0
    while done < events:
        group = min(events - done, per * STREAMS)
        calls = []
        for s in range(0, group, per):
            stream_no = (s // per) % STREAMS
            batch = [
                Pinged(stream_no=stream_no, n=start + done + s + i, note=NOTE)
                for i in range(min(per, group - s))
            ]
            calls.append(app.append(f"s-{stream_no}", batch))
        await asyncio.gather(*calls)
        done += group


def counting_app(url: str, subs: int, *, start: str = "beginning", prefix: str = "sub") -> tuple[App, list[int], list[str]]:  # fmt: skip
    app = App("bench", store=url)
    counts = [0] * subs
    names = [f"{prefix}-{i}" for i in range(subs)]
    for i, name in enumerate(names):

        def make(index: int) -> Callable[[Pinged, Context], Awaitable[None]]:
            async def on_pinged(e: Pinged, ctx: Context) -> None:
                counts[index] += 1

            return on_pinged

        app.subscriber(name, start=start)(make(i))
    return app, counts, names


async def at_end(app: App, names: list[str], last: int) -> bool:
    for name in names:
        parts = await app.store.partitions(name)
        if not parts or any(p.position < last for p in parts):
            return False
    return True


# --- tidings: drain and run --------------------------------------------------------------------


def tidings_delivery(key: str, sync: str, subs: int, continuous: bool) -> Run:
    async def run(path: Path, cfg: Config) -> list[float]:
        app, counts, names = counting_app(store_url(path, sync), subs)
        async with app:
            observe_app(key, app)
            await publish_log(app, cfg.events)
            last = await app.store.last_position()
            worker = app.worker(batch_size=cfg.batch_size)
            timer = Timer()
            if not continuous:
                with timer():
                    await worker.drain()
            else:
                with timer():
                    task = asyncio.create_task(worker.run())
                    deadline = time.perf_counter() + 120
                    while time.perf_counter() < deadline:
                        if min(counts) >= cfg.events and await at_end(app, names, last):
                            break
                        await asyncio.sleep(0.001)
                worker.stop()
                await task
            check(
                counts == [cfg.events] * subs and await at_end(app, names, last),
                f"{key}: handled {counts} of {cfg.events}, checkpoints at the end: "
                f"{await at_end(app, names, last)}",
            )
        return [cfg.events / timer.seconds]

    return run


# --- eventsourcing -----------------------------------------------------------------------------


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


def es_env(path: Path) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "ESLEADER_SQLITE_DBNAME": str(path.with_name(f"{path.stem}-leader.db")),
        "ESCOUNTER_SQLITE_DBNAME": str(path.with_name(f"{path.stem}-counter.db")),
    }


def es_follower(key: str) -> Run:
    async def run(path: Path, cfg: Config) -> list[float]:
        env = es_env(path)
        leader = EsLeader(env=env)
        try:
            things = [Thing(stream_no=i) for i in range(STREAMS)]  # 100 "Created" events
            n = STREAMS
            while n < cfg.es_events:
                for thing in things:
                    for _ in range(min(10, cfg.es_events - n)):
                        thing.ping(n=n, note=NOTE)
                        n += 1
                leader.save(*things)  # 1,000 events per save
            if n == STREAMS:
                leader.save(*things)
            total = leader.recorder.max_notification_id()
        finally:
            leader.close()
        system = System(pipes=[[EsLeader, EsCounter]])
        runner: SingleThreadedRunner[Any] = SingleThreadedRunner(system, env=env)
        runner.start()
        try:
            follower = runner.get(EsCounter)
            with follower.factory.datastore.get_connection(commit=False) as conn:
                observe(key, conn._sqlite_conn)
            EsCounter.count = 0
            timer = Timer()
            with timer():
                follower.pull_and_process(EsLeader.name)
            tracked = follower.recorder.max_tracking_id(EsLeader.name)
            check(
                EsCounter.count == total and tracked == total,
                f"{key}: processed {EsCounter.count} of {total}, tracking at {tracked}",
            )
        finally:
            runner.stop()
        return [total / timer.seconds]

    return run


# --- latency -----------------------------------------------------------------------------------

WARMUP = 0.5


def tidings_latency(key: str, sync: str) -> Run:
    async def run(path: Path, cfg: Config) -> list[float]:
        app = App("latency", store=store_url(path, sync))
        sent: dict[int, float] = {}
        ticks: dict[int, float] = {}
        handled: dict[int, float] = {}
        checkpointed: dict[int, float] = {}
        unconfirmed: list[int] = []
        warm = int(WARMUP * cfg.rate)
        total = warm + int(cfg.latency_seconds * cfg.rate)
        all_checkpointed = asyncio.Event()

        @app.subscriber("lat")
        async def on_ticked(e: Ticked, ctx: Context) -> None:
            handled[e.seq] = time.perf_counter()
            sent[e.seq] = e.sent
            unconfirmed.append(e.seq)

        async with app:
            observe_app(key, app)
            store = app.store
            commit = store.commit

            async def stamped(tx: Any) -> Any:
                result = await commit(tx)
                if any(c.subscription == "lat" for c in tx.checkpoints):
                    now = time.perf_counter()
                    for seq in unconfirmed:
                        checkpointed[seq] = now
                    unconfirmed.clear()
                    if len(checkpointed) >= total:
                        all_checkpointed.set()
                return result

            store.commit = stamped  # type: ignore[method-assign]

            worker = app.worker(batch_size=cfg.batch_size)
            task = asyncio.create_task(worker.run())
            pending: set[asyncio.Task[Any]] = set()

            async def publish(seq: int, tick: float) -> None:
                ticks[seq] = tick
                await app.publish(
                    Ticked(seq=seq, sent=time.perf_counter()), stream=f"lat-{seq % STREAMS}"
                )

            start = time.perf_counter()
            seq = 0
            while seq < total:
                now = time.perf_counter()
                due = start + seq / cfg.rate
                if now < due:
                    await asyncio.sleep(due - now)
                    continue
                while seq < total and start + seq / cfg.rate <= now:
                    t = asyncio.create_task(publish(seq, start + seq / cfg.rate))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                    seq += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_checkpointed.wait(), timeout=30)
            worker.stop()
            await task
        measured = range(warm, total)
        check(
            all(s in checkpointed for s in measured),
            f"{key}: {sum(s in checkpointed for s in measured)} of {len(measured)} checkpointed",
        )
        done = [s for s in measured if s in checkpointed]
        ms = 1000.0
        to_handled = [(handled[s] - sent[s]) * ms for s in done]
        to_checkpoint = [(checkpointed[s] - sent[s]) * ms for s in done]
        from_tick = [(handled[s] - ticks[s]) * ms for s in done]
        sent_span = sent[done[-1]] - sent[done[0]]
        return [
            percentile(to_handled, 50),
            percentile(to_handled, 99),
            max(to_handled),
            percentile(to_checkpoint, 50),
            percentile(to_checkpoint, 99),
            percentile(from_tick, 99),
            (len(done) - 1) / sent_span if sent_span > 0 else 0.0,
        ]

    return run


# --- sent commands -----------------------------------------------------------------------------


def command_app(url: str) -> App:
    app = App("commands", store=url)

    @app.command
    async def do_it(cmd: DoIt, ctx: Context) -> dict[str, Any]:
        return {"ok": True, "n": cmd.n}

    return app


async def send_all(app: App, count: int, chunk: int = 1000) -> list[Any]:
    tickets: list[Any] = []
    for start in range(0, count, chunk):
        tickets += await asyncio.gather(
            *(app.send(DoIt(n=n)) for n in range(start, min(count, start + chunk)))
        )
    return tickets


def tidings_commands(key: str, sync: str, end_to_end: bool) -> Run:
    async def run(path: Path, cfg: Config) -> list[float]:
        app = command_app(store_url(path, sync))
        async with app:
            observe_app(key, app)
            timer = Timer()
            if not end_to_end:
                tickets = await send_all(app, cfg.commands)
                with timer():
                    await app.worker(batch_size=cfg.batch_size).drain()
                outcomes = [await app.outcome(t.message_id) for t in tickets]
            else:
                worker = app.worker(batch_size=cfg.batch_size)
                task = asyncio.create_task(worker.run())
                warm = await app.send(DoIt(n=-1))
                await warm.outcome(timeout=30)
                with timer():
                    tickets = await send_all(app, cfg.commands)
                    outcomes = await asyncio.gather(*(t.outcome(timeout=120) for t in tickets))
                worker.stop()
                await task
            ok = sum(o.status == "succeeded" for o in outcomes)
            check(ok == cfg.commands, f"{key}: {ok} of {cfg.commands} succeeded")
        return [cfg.commands / timer.seconds]

    return run


# --- flatness ----------------------------------------------------------------------------------

BIG: dict[str, Path] = {}
_subscription_ids = itertools.count()


async def build_log(path: Path, events: int) -> float:
    app = App("bench", store=store_url(path, "normal"))
    start = time.perf_counter()
    async with app:
        await publish_log(app, events)
    return time.perf_counter() - start


async def catch_up(key: str, file: Path, sync: str, cfg: Config) -> float:
    """Events/s of a new ``start="now"`` subscription catching up the next ``flat_events``."""
    app, counts, names = counting_app(
        store_url(file, sync), 1, start="now", prefix=f"flat-{next(_subscription_ids)}"
    )
    async with app:
        observe_app(key, app)
        await app.worker(batch_size=cfg.batch_size).drain()  # sets the subscription up at "now"
        base = await app.store.last_position()
        await publish_log(app, cfg.flat_events, start=base)
        last = await app.store.last_position()
        timer = Timer()
        with timer():
            await app.worker(batch_size=cfg.batch_size).drain()
        check(
            counts == [cfg.flat_events] and await at_end(app, names, last),
            f"{key}: handled {counts} of {cfg.flat_events} (log of {last})",
        )
        LOG_SIZES.setdefault(key, []).append(last)
    return cfg.flat_events / timer.seconds


#: catch-ups of each log per slot, taking turns (small, big, big, small, ...)
PAIRS = 3


def tidings_flat(key: str, sync: str) -> Run:
    """Paired: the 10k log (a fresh file each time) and the big log take turns within one slot,
    so that both meet the same machine weather; the slot's ratio is the median of the pairs'."""

    async def run(path: Path, cfg: Config) -> list[float]:
        small, big, ratios = [], [], []
        for k in range(PAIRS):
            fresh = path.with_name(f"{path.stem}-small-{k}.db")
            if k % 2 == 0:
                s = await catch_up(f"{key}-small", fresh, sync, cfg)
                b = await catch_up(f"{key}-big", BIG["path"], sync, cfg)
            else:
                b = await catch_up(f"{key}-big", BIG["path"], sync, cfg)
                s = await catch_up(f"{key}-small", fresh, sync, cfg)
            small.append(s)
            big.append(b)
            ratios.append(b / s)
        return [statistics.median(small), statistics.median(big), statistics.median(ratios)]

    return run


LOG_SIZES: dict[str, list[int]] = {}


# --- poison: a few streams with a message that always fails -------------------------------------

POISON_STREAMS = 200
#: 1% of the streams: their message number POISON_AT (0-based: the 5th) always raises
POISONED = (37, 141)
POISON_AT = 4
POISON_POLICY = RetryPolicy(max_attempts=3, immediate=2, backoff=0.01)
POISON_SUB = "poison"


class PoisonError(Exception):
    """What a poisoned message's handler raises, every time."""


async def publish_streams(app: App, events: int, streams: int) -> list[int]:
    """``events`` events over ``streams`` streams, ``n`` numbering each stream's events from 0:
    group commits of 1,000 events (100 concurrent 10-event appends, the streams taking turns).
    Returns how many events each stream got."""
    per, calls_per_group = 10, 100
    counts = [0] * streams
    done = call = 0
    while done < events:
        calls = []
        while len(calls) < calls_per_group and done < events:
            stream_no = call % streams
            size = min(per, events - done)
            first = counts[stream_no]
            batch = [Pinged(stream_no=stream_no, n=first + i, note=NOTE) for i in range(size)]
            calls.append(app.append(f"p-{stream_no}", batch))
            counts[stream_no] += size
            done += size
            call += 1
        await asyncio.gather(*calls)
    return counts


async def poison_once(key: str, path: Path, cfg: Config, *, sick: bool) -> float:
    """One drain of ``cfg.events`` events over 200 streams; events/s of the healthy streams."""
    app = App("bench", store=store_url(path, "full"))
    poisoned = set(POISONED) if sick else set()
    handled = [0] * POISON_STREAMS
    tries = [0] * POISON_STREAMS
    parked: list[Any] = []

    @app.subscriber(POISON_SUB, policy=POISON_POLICY)
    async def on_pinged(e: Pinged, ctx: Context) -> None:
        if e.n == POISON_AT and e.stream_no in poisoned:
            tries[e.stream_no] += 1
            raise PoisonError(f"poisoned message {e.n} of stream {e.stream_no}")
        handled[e.stream_no] += 1

    app.on_alert(parked.append)  # counted below
    with quiet_alerts():
        return await poison_drain(key, app, cfg, poisoned, handled, tries, parked)


@contextlib.contextmanager
def quiet_alerts() -> Iterator[None]:
    """The alert's warning is still logged, to a NullHandler instead of stderr."""
    quiet = logging.NullHandler()
    logger = logging.getLogger("tidings.alerts")
    logger.addHandler(quiet)
    try:
        yield
    finally:
        logger.removeHandler(quiet)


async def poison_drain(
    key: str,
    app: App,
    cfg: Config,
    poisoned: set[int],
    handled: list[int],
    tries: list[int],
    parked: list[Any],
) -> float:
    async with app:
        observe_app(key, app)
        per_stream = await publish_streams(app, cfg.events, POISON_STREAMS)
        last = await app.store.last_position()
        worker = app.worker(batch_size=cfg.batch_size)
        timer = Timer(key)
        with timer():
            await worker.drain()
        # the run is what it claims to be
        held = await app.store.held(subscription=POISON_SUB, limit=cfg.events + 1)
        dead = [h for h in held if h.status == DEAD]
        waiting = [h for h in held if h.status == WAITING]
        healthy = [s for s in range(POISON_STREAMS) if s not in poisoned]
        want_waiting = {f"p-{s}": per_stream[s] - POISON_AT - 1 for s in sorted(poisoned)}
        got_waiting = {f"p-{s}": sum(h.stream == f"p-{s}" for h in waiting) for s in poisoned}
        check(
            all(handled[s] == per_stream[s] for s in healthy),
            f"{key}: healthy streams not fully handled: "
            f"{[(s, handled[s], per_stream[s]) for s in healthy if handled[s] != per_stream[s]][:5]}",
        )
        check(
            all(
                handled[s] == POISON_AT and tries[s] == POISON_POLICY.max_attempts for s in poisoned
            ),
            f"{key}: poisoned streams: handled {[handled[s] for s in poisoned]} (want {POISON_AT}), "
            f"tries {[tries[s] for s in poisoned]} (want {POISON_POLICY.max_attempts})",
        )
        check(
            len(dead) == len(poisoned)
            and {h.stream for h in dead} == {f"p-{s}" for s in poisoned}
            and all(h.attempts == POISON_POLICY.max_attempts for h in dead),
            f"{key}: dead letters {[(h.stream, h.attempts) for h in dead]}, want one per poisoned "
            f"stream with attempts == {POISON_POLICY.max_attempts}",
        )
        check(
            got_waiting == want_waiting and len(held) == len(dead) + len(waiting),
            f"{key}: held as waiting {got_waiting}, want {want_waiting}; "
            f"other held rows: {len(held) - len(dead) - len(waiting)}",
        )
        check(
            sum(a.kind == "message-parked" for a in parked) == len(poisoned),
            f"{key}: {len(parked)} alerts, want {len(poisoned)} message-parked",
        )
        check(await at_end(app, [POISON_SUB], last), f"{key}: checkpoints not at the end")
        for h in dead:
            span = h.history[-1].at - h.history[0].at if h.history else 0.0
            ATTEMPT_SPANS.append(span)
    return sum(handled[s] for s in healthy) / timer.seconds


#: seconds from a dead letter's first attempt to its last (every poisoned run)
ATTEMPT_SPANS: list[float] = []


def tidings_poison(key: str) -> Run:
    """Paired, like the flatness slot: clean and poisoned runs take turns within the slot (clean,
    poisoned, poisoned, clean, clean, poisoned), each on a fresh file; the slot's ratio is the median
    of its pairs' ratios."""

    async def run(path: Path, cfg: Config) -> list[float]:
        clean, sick, ratios = [], [], []
        for k in range(PAIRS):
            files = [path.with_name(f"{path.stem}-{side}-{k}.db") for side in ("clean", "sick")]
            if k % 2 == 0:
                c = await poison_once(f"{key}-clean", files[0], cfg, sick=False)
                s = await poison_once(f"{key}-sick", files[1], cfg, sick=True)
            else:
                s = await poison_once(f"{key}-sick", files[1], cfg, sick=True)
                c = await poison_once(f"{key}-clean", files[0], cfg, sick=False)
            clean.append(c)
            sick.append(s)
            ratios.append(s / c)
        return [statistics.median(clean), statistics.median(sick), statistics.median(ratios)]

    return run


# --- the slots and the targets -----------------------------------------------------------------

DRAIN = "pre-published events, then worker.drain() (events/s; 3 subs: each handled all of them)"
RUN = "pre-published events, worker.run() until every checkpoint is at the last position"
ES = "eventsourcing 9.5: ProcessApplication follower, SingleThreadedRunner, SQLite"
LATENCY = "latency at a steady 1,000 events/s, worker.run() in the same process (ms)"
COMMANDS = "sent commands, no-op handler returning a small dict (commands/s)"
FLAT = "a new start='now' subscription catching up the last 10,000 events (drain)"
POISON = (
    "200 streams, 1 sub, FULL, drain: clean vs 2 streams with a message that always fails "
    "(events/s of the healthy streams)"
)


def slots(cfg: Config) -> list[Slot]:
    out: list[Slot] = []

    def one(section: str, key: str, label: str, unit: str, run: Run) -> None:
        out.append(Slot([Series(key, label, unit, section)], run))

    # fmt: off
    for continuous, section, verb in ((False, DRAIN, "drain"), (True, RUN, "run")):
        for sync, mode in (("full", "SQLite FULL"), ("normal", "SQLite NORMAL"), ("memory", "memory://")):
            tag = "mem" if sync == "memory" else sync
            for subs in (1, 3):
                key = f"{verb}-{subs}-{tag}"
                one(section, key, f"{verb}, {subs} sub{'s' if subs > 1 else ''}, {mode}", "events/s",
                    tidings_delivery(key, sync, subs, continuous))
    one(ES, "es-follow", "eventsourcing follower, policy counts", "events/s", es_follower("es-follow"))
    for sync, mode in (("full", "FULL"), ("normal", "NORMAL")):
        key = f"lat-{sync}"
        series = [
            Series(f"{key}-p50", f"publish->handled p50, {mode}", "ms", LATENCY, False),
            Series(f"{key}-p99", f"publish->handled p99, {mode}", "ms", LATENCY, False),
            Series(f"{key}-max", f"publish->handled max, {mode}", "ms", LATENCY, False),
            Series(f"{key}-ck50", f"publish->checkpointed p50, {mode}", "ms", LATENCY, False),
            Series(f"{key}-ck99", f"publish->checkpointed p99, {mode}", "ms", LATENCY, False),
            Series(f"{key}-tick99", f"tick->handled p99, {mode}", "ms", LATENCY, False),
            Series(f"{key}-rate", f"publish rate achieved, {mode}", "events/s", LATENCY),
        ]
        out.append(Slot(series, tidings_latency(key, sync)))
    for sync, mode in (("full", "FULL"), ("normal", "NORMAL")):
        one(COMMANDS, f"cmd-drain-{sync}", f"sent first, then drain, {mode}", "cmds/s", tidings_commands(f"cmd-drain-{sync}", sync, False))
        one(COMMANDS, f"cmd-e2e-{sync}", f"send + wait outcomes, run, {mode}", "cmds/s", tidings_commands(f"cmd-e2e-{sync}", sync, True))
    big = f"{cfg.big / 1e6:g}M" if cfg.big >= 1_000_000 else f"{cfg.big // 1000}k"
    small = f"{cfg.flat_events // 1000}k"
    for sync, mode in (("full", "FULL"), ("normal", "NORMAL")):
        key = f"flat-{sync}"
        series = [
            Series(f"{key}-small", f"log of {small}, {mode}", "events/s", FLAT),
            Series(f"{key}-big", f"log of {big} and up, {mode}", "events/s", FLAT),
            Series(f"{key}-ratio", f"big / {small} (median of pairs), {mode}", "x", FLAT),
        ]
        out.append(Slot(series, tidings_flat(key, sync)))
    series = [
        Series("poison-clean", "clean: handler never fails", "events/s", POISON),
        Series("poison-sick", "1% of streams poisoned: healthy events", "events/s", POISON),
        Series("poison-ratio", "poisoned / clean (median of pairs)", "x", POISON),
    ]
    out.append(Slot(series, tidings_poison("poison")))
    # fmt: on
    return out


@dataclass(frozen=True)
class Target:
    label: str
    numerator: str
    #: a series key, or a number to compare the numerator with
    denominator: str | float
    #: "min": value/denominator >= bound; "max": <= bound; "band": within bound of 1
    sense: str
    bound: float
    primary: bool = True


PER_SUB = 20_000.0
# fmt: off
TARGETS = [
    Target("drain, 1 sub, SQLite FULL >= 20,000 events/s",        "drain-1-full",   PER_SUB, "min", 1.0),
    Target("drain, 3 subs, SQLite FULL >= 20,000 events/s each",  "drain-3-full",   PER_SUB, "min", 1.0),
    Target("run, 1 sub, SQLite FULL >= 20,000 events/s",          "run-1-full",     PER_SUB, "min", 1.0),
    Target("run, 3 subs, SQLite FULL >= 20,000 events/s each",    "run-3-full",     PER_SUB, "min", 1.0),
    Target("drain, 1 sub, SQLite NORMAL >= 20,000 events/s",      "drain-1-normal", PER_SUB, "min", 1.0, False),
    Target("drain, 3 subs, SQLite NORMAL >= 20,000 events/s each", "drain-3-normal", PER_SUB, "min", 1.0, False),
    Target("run, 1 sub, SQLite NORMAL >= 20,000 events/s",        "run-1-normal",   PER_SUB, "min", 1.0, False),
    Target("run, 3 subs, SQLite NORMAL >= 20,000 events/s each",  "run-3-normal",   PER_SUB, "min", 1.0, False),
    Target("p99 publish->handled < 50 ms at 1,000/s, FULL",       "lat-full-p99",   50.0,    "max", 1.0),
    Target("p99 publish->checkpointed < 50 ms, FULL",             "lat-full-ck99",  50.0,    "max", 1.0, False),
    Target("p99 publish->handled < 50 ms at 1,000/s, NORMAL",     "lat-normal-p99", 50.0,    "max", 1.0, False),
    Target("drain 1 sub FULL / eventsourcing follower >= 3x",     "drain-1-full",   "es-follow", "min", 3.0),
    Target("run 1 sub FULL / eventsourcing follower >= 3x",       "run-1-full",     "es-follow", "min", 3.0, False),
    Target("drain 3 subs FULL / eventsourcing follower >= 3x",    "drain-3-full",   "es-follow", "min", 3.0, False),
    Target("catch-up, big log / 10k log within 20%, FULL (paired)", "flat-full-ratio", 1.0, "band", 0.2),
    Target("catch-up, big log / 10k log within 20%, NORMAL (paired)", "flat-normal-ratio", 1.0, "band", 0.2, False),
    Target("poisoned: healthy events/s >= 80% of clean (paired)", "poison-ratio", 1.0, "min", 0.8),
]
# fmt: on


# --- the machine -------------------------------------------------------------------------------


def _first(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "?"


def filesystem_of(path: Path) -> str:
    best, found = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            device, mount, fstype, options, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, found = mount, f"{fstype} on {device} ({mount}, {options.split(',')[0]})"
    return found


def git_sha() -> str:
    """The commit of the tidings being measured (which need not be this file's checkout)."""
    root = Path(tidings.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "."], cwd=root, check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"{sha}{' + uncommitted changes in src/' if changed else ''}"


def command_line() -> str:
    python = os.path.relpath(sys.executable) if sys.prefix != sys.base_prefix else sys.executable
    pythonpath = os.environ.get("PYTHONPATH")
    prefix = f"PYTHONPATH={pythonpath} " if pythonpath else ""
    return f"{prefix}{python} {' '.join(sys.argv)}"


def load() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])
    return "?"


def machine(directory: Path) -> list[str]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?"
    return [
        f"date        {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"command     {command_line()}",
        f"machine     {os.cpu_count()} CPUs ({_first('/proc/cpuinfo', 'model name')}), RAM {ram}, "
        f"kernel {platform.release()}",
        f"database    {directory} — {filesystem_of(directory)}",
        f"versions    python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"msgspec {importlib.metadata.version('msgspec')}, "
        f"eventsourcing {importlib.metadata.version('eventsourcing')}, "
        f"tidings {importlib.metadata.version('tidings')} at {git_sha()}",
        f"source      {Path(tidings.__file__).resolve().parent}",
        f"load        {load()} (1, 5, 15 min) before the run",
    ]


# --- running and reporting ---------------------------------------------------------------------


def remove_files(directory: Path, pattern: str) -> None:
    for leftover in directory.glob(pattern):
        leftover.unlink()


def needs_big(chosen: list[Slot]) -> bool:
    return any(s.key.startswith("flat") for slot in chosen for s in slot.series)


async def prepare_big(cfg: Config, directory: Path) -> None:
    path = directory / "big.db"
    # the rounds add flat_events each; start below --big so that the first round sees --big
    seconds = await build_log(path, cfg.big - cfg.flat_events)
    BIG["path"] = path
    print(
        f"big log     {cfg.big - cfg.flat_events:,} events built in {seconds:.1f}s "
        f"({(cfg.big - cfg.flat_events) / seconds:,.0f}/s, NORMAL, 1,000 per group commit)",
        flush=True,
    )


async def run_all(
    chosen: list[Slot], args: argparse.Namespace, cfg: Config, directory: Path
) -> None:
    if needs_big(chosen):
        await prepare_big(cfg, directory)
    number = 0
    for round_no in range(args.rounds):
        shift = round_no % len(chosen)
        started = time.perf_counter()
        for slot in chosen[shift:] + chosen[:shift]:
            number += 1
            values = await slot.run(directory / f"slot-{number}.db", cfg)
            for series, value in zip(slot.series, values, strict=False):
                series.values.append(value)
            remove_files(directory, f"slot-{number}*")
        print(
            f"round {round_no + 1}/{args.rounds} done in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )


def fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:,.1f}" if unit == "ms" else f"{value:,.0f}"


def report(chosen: list[Slot], per_round: bool) -> list[str]:
    every = [series for slot in chosen for series in slot.series]
    by_key = {series.key: series for series in every}
    head = (
        f"{'contender':<40} {'unit':>8} {'median':>10} {'min':>10} {'max':>10}  "
        f"{'mode seen':<11} key"
    )
    lines = [head, "-" * (len(head) + 16)]
    section = ""
    for s in every:
        if s.section != section:
            section = s.section
            lines.append(f"[{section}]")
        observed = OBSERVED.get(s.key, OBSERVED.get(s.key.rsplit("-", 1)[0], "-"))
        if s.key.startswith("flat"):
            observed = OBSERVED.get(s.key.replace("-ratio", "-big"), "-")
        if s.key == "poison-ratio":
            observed = OBSERVED.get("poison-sick", "-")
        lines.append(
            f"{s.label:<40} {s.unit:>8} {fmt(s.median(), s.unit):>10} "
            f"{fmt(min(s.values), s.unit):>10} {fmt(max(s.values), s.unit):>10}  "
            f"{observed:<11} {s.key}"
        )
    for key, sizes in LOG_SIZES.items():
        lines.append(f"  ({key}: log length when caught up {min(sizes):,} to {max(sizes):,}, {len(sizes)} catch-ups)")  # fmt: skip
    if ATTEMPT_SPANS:
        ms = sorted(1000 * x for x in ATTEMPT_SPANS)
        lines.append(f"  (poison-sick: a dead letter's first to third attempt took {ms[0]:.2f} to {ms[-1]:.2f} ms, {len(ms)} dead letters)")  # fmt: skip
    if per_round:
        lines += ["", "per round (rounds in order; the order of slots within a round rotates):"]
        for s in every:
            lines.append(f"  {s.key:<18} {'  '.join(fmt(v, s.unit) for v in s.values)}")
    lines += [
        "",
        "targets: ratio of the medians (value / target, or value / yardstick); beside it the",
        "ratio of the best rounds, and [the lowest-highest ratio within one round]",
    ]
    for t in TARGETS:
        num = by_key.get(t.numerator)
        if num is None:
            continue
        if isinstance(t.denominator, str):
            den = by_key.get(t.denominator)
            if den is None:
                continue
            dens, den_median, den_best = den.values, den.median(), den.best()
        else:
            dens = [t.denominator] * len(num.values)
            den_median = den_best = t.denominator
        ratios = [a / b for a, b in zip(num.values, dens, strict=True)]
        ratio = num.median() / den_median
        best = num.best() / den_best
        if t.sense == "min":
            met, want = ratio >= t.bound, f">= {t.bound:g}x"
        elif t.sense == "max":
            met, want = ratio <= t.bound, f"<= {t.bound:g}x"
        else:
            met, want = abs(ratio - 1) <= t.bound, f"1±{t.bound:g}"
        verdict = (
            ("MET" if met else "MISSED") if t.primary else ("(info) ok" if met else "(info) no")
        )
        best_text = "   -  " if t.sense == "band" else f"{best:5.2f}x"
        lines.append(
            f"{t.label:<56} {ratio:6.2f}x  best {best_text}  [{min(ratios):.2f}-{max(ratios):.2f}]"
            f"  want {want:<8} {verdict}"
        )
    if CHECKS:
        lines += [
            "",
            "FAILED CHECKS (the numbers above may be wrong):",
            *(f"  {c}" for c in CHECKS),
        ]
    return lines


async def profile_slot(
    slot: Slot, cfg: Config, directory: Path, top: int, profile_key: str
) -> list[str]:
    """Run one slot once with cProfile on around its timed region only (in the poison slot, only
    the runs whose key starts with ``profile_key``: ``poison-clean`` or ``poison-sick``)."""
    global PROFILER, PROFILE_KEY
    if needs_big([slot]):
        await prepare_big(cfg, directory)
    await slot.run(directory / "warm.db", cfg)  # warm: imports, first-use caches
    remove_files(directory, "warm*")
    PROFILE_KEY = profile_key
    PROFILER = cProfile.Profile()
    values = await slot.run(directory / "profiled.db", cfg)
    profiler, PROFILER = PROFILER, None
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    key = slot.series[0].key
    if key.startswith(("drain", "run")):
        count = cfg.events
    elif key.startswith("cmd"):
        count = cfg.commands
    elif key.startswith("flat"):
        count = cfg.flat_events * 2 * PAIRS
    elif key.startswith("es"):
        count = cfg.es_events
    elif key.startswith("poison"):
        # healthy events per timed drain (all of them in a clean run), one clean and one poisoned
        # drain per pair
        share = 1 - len(POISONED) / POISON_STREAMS
        per_pair = {"clean": 1.0, "sick": share}.get(PROFILE_KEY.removeprefix("poison-"), 1 + share)
        count = int(cfg.events * per_pair * PAIRS)
    else:
        raise SystemExit(f"--profile does not support {key} (no timed region)")
    shown = 0
    if key.startswith("poison"):
        key = profile_key if profile_key in ("poison-clean", "poison-sick") else "poison (both)"
        shown = 1 if key == "poison-sick" else 0
    out = [
        f"profile of {key} (one run, after one unprofiled warm-up run): "
        f"{fmt(values[shown], slot.series[shown].unit)} {slot.series[shown].unit} under the profiler; "
        f"{total:.3f}s profiled time for {count:,} messages = {total / count * 1e6:.1f} µs per message",
        "",
        f"{'tottime µs/msg':>14} {'cum µs/msg':>11} {'calls/msg':>10}  function",
    ]
    rows = []
    for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{_short(file)}:{line}({name})"))
    for tt, ct, nc, where in sorted(rows, reverse=True)[:top]:
        out.append(f"{tt / count * 1e6:14.2f} {ct / count * 1e6:11.2f} {nc / count:10.2f}  {where}")
    out += ["", "by cumulative time (tidings and sqlite3 only):"]
    mine = [r for r in rows if "tidings" in r[3] or "sqlite3" in r[3] or "msgspec" in r[3]]
    for tt, ct, nc, where in sorted(mine, key=lambda r: r[1], reverse=True)[:top]:
        out.append(f"{tt / count * 1e6:14.2f} {ct / count * 1e6:11.2f} {nc / count:10.2f}  {where}")
    return out


def _short(file: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--events", type=int, default=20_000, help="events per drain/run slot")
    parser.add_argument("--es-events", type=int, default=5_000, help="events for eventsourcing")
    parser.add_argument("--commands", type=int, default=5_000, help="commands per command slot")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="measured window")
    parser.add_argument("--rate", type=int, default=1_000, help="events/s in the latency slots")
    parser.add_argument("--big", type=int, default=1_000_000, help="length of the big log")
    parser.add_argument("--batch-size", type=int, default=500, help="worker batch_size")
    parser.add_argument("--quick", action="store_true", help="2 rounds, smaller logs, 2 s latency")
    parser.add_argument("--per-round", action="store_true", help="also list every round's value")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: temp)")
    parser.add_argument("--only", default="", help="comma-separated key prefixes (keys: table)")
    parser.add_argument("--profile", default="", help="cProfile one slot by key, e.g. drain-1-full")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2
        args.events, args.es_events, args.commands = 10_000, 1_000, 2_000
        args.latency_seconds, args.big = 2.0, 200_000
    cfg = Config(
        events=args.events,
        es_events=args.es_events,
        commands=args.commands,
        latency_seconds=args.latency_seconds,
        rate=args.rate,
        flat_events=10_000,
        big=args.big,
        batch_size=args.batch_size,
    )
    chosen = slots(cfg)
    if args.profile:
        chosen = [s for s in chosen if any(x.key.startswith(args.profile) for x in s.series)][:1]
        if not chosen:
            parser.error(f"no slot has a key starting with {args.profile!r}")
    elif args.only:
        prefixes = tuple(p.strip() for p in args.only.split(",") if p.strip())
        chosen = [s for s in chosen if any(x.key.startswith(prefixes) for x in s.series)]
    directory = Path(tempfile.mkdtemp(prefix="tidings-delivery-", dir=args.dir)).resolve()
    try:
        print("\n".join(machine(directory)), flush=True)
        if args.profile:
            lines = asyncio.run(profile_slot(chosen[0], cfg, directory, args.top, args.profile))
            print("\n".join(lines))
            return
        print(
            f"plan        {len(chosen)} slots x {args.rounds} rounds, {cfg.events:,} events per "
            f"drain/run slot, {cfg.es_events:,} for eventsourcing, {cfg.commands:,} commands, "
            f"latency {cfg.latency_seconds:g}s at {cfg.rate:,}/s, batch_size {cfg.batch_size}, "
            "fresh files per slot",
            flush=True,
        )
        started = time.perf_counter()
        asyncio.run(run_all(chosen, args, cfg, directory))
        print(
            f"took        {time.perf_counter() - started:.0f}s; load {load()} after the run\n",
            flush=True,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("\n".join(report(chosen, args.per_round)))


if __name__ == "__main__":
    main()
