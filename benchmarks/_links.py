"""The latency and backlog measurements of ``transports.py``: service A → relay → broker → B.

* ``latency(url, ...)``: A publishes at a steady ``rate`` (events/s) for ``seconds``, after one
  second at that rate that is not counted (the ramp from idle), each event stamped with the
  wall-clock time it was due (so a publisher falling behind counts against it); B, a service
  of its own, runs in a process of its own (spawned) and its subscriber takes the wall-clock
  time it handled it. Values: p99 and p50 publish→handled in ms, and the rate A kept.
* ``backlog(url, ...)``: A's log is filled with ``events`` events with no relay running (B's
  queue or consumer made first, so the broker stores them for B), then A's relay starts and
  relays them all. Values: the relay's rate over the last quarter of the backlog divided by its
  rate over the first quarter after its first confirmation (1: flat), then both rates and the
  whole run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _pairs import check, percentile
from tidings import App, Context, Event
from tidings.records import AppendOp, Transaction
from tidings.transports import Routes

STREAMS = 100
PAD = "x" * 150
#: deletes what a trial made on the broker: (url, namespace, services)
Clean = Callable[[str, str, tuple[str, ...]], Awaitable[None]]


class Stamped(Event, type_name="bench.Stamped"):
    n: int
    due: float
    pad: str


def _app(name: str, url: str, namespace: str, path: Path, routes: Routes) -> App:
    """A service on its SQLite FULL file, connected to ``url`` by ``routes``."""
    options = {"idempotent": False} if url.startswith("kafka") else {}
    app = App(name, store=f"sqlite:///{path}")
    app.connect(url, routes, namespace=namespace, **options)
    return app


def _service_a(url: str, namespace: str, tmp: str) -> App:
    return _app(
        "bench-a", url, namespace, Path(tmp) / "a.db", Routes().publish(Stamped, topic="ticks")
    )


def _service_b(url: str, namespace: str, tmp: str) -> App:
    routes = Routes().subscribe("ticks", Stamped)
    return _app("bench-b", url, namespace, Path(tmp) / "b.db", routes)


@contextlib.asynccontextmanager
async def _services(url: str, clean: Clean) -> AsyncIterator[tuple[App, App]]:
    """A (publishes ``Stamped`` to ``ticks``) and B (subscribes), each on its SQLite FULL file,
    B's queue made; nothing running yet."""
    namespace = f"b{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _service_a(url, namespace, tmp), _service_b(url, namespace, tmp)
        try:
            async with a, b:
                await b.links[0].open()
                try:
                    yield a, b
                finally:
                    for link in (*a.links, *b.links):
                        await link.close()  # what no worker ran (and closed) yet
        finally:
            await clean(url, namespace, ("bench-a", "bench-b"))


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            check(False, f"{what}: not done within {timeout:.0f}s")
            return False
        await asyncio.sleep(0.005)
    return True


def latency(
    url: str, clean: Clean, *, rate: float, seconds: float
) -> Callable[[], Awaitable[dict[str, float]]]:
    async def measure() -> dict[str, float]:
        skip = int(rate)  # the first second: the ramp from idle, not counted
        total = skip + int(rate * seconds)
        namespace = f"b{uuid.uuid4().hex[:10]}"
        here, there = multiprocessing.Pipe()
        with tempfile.TemporaryDirectory() as tmp:
            args = (url, namespace, tmp, skip, total - skip, there)
            b = multiprocessing.get_context("spawn").Process(target=_run_b, args=args)
            b.start()
            try:
                await _reply(here, 60, "B ready")  # its queue or consumers are made
                a = _service_a(url, namespace, tmp)
                async with a:
                    worker = a.worker()
                    running = asyncio.create_task(worker.run())
                    await a.publish(Stamped(-1, 0.0, PAD), stream="warm-up")
                    await _reply(here, 60, "latency warm-up")
                    kept = await _publish_at(a, rate, total)
                    lags: list[float] = await _reply(here, 120, f"latency on {url[:5]}") or []
                    worker.stop()
                    await running
            finally:
                b.join(30)
                if b.exitcode is None:
                    b.kill()
                await clean(url, namespace, ("bench-a", "bench-b"))
        check(len(lags) == total - skip, f"latency: handled {len(lags)} of {total - skip}")
        ms = [lag * 1000 for lag in lags] or [0.0]
        return {"p99 ms": percentile(ms, 99), "p50 ms": percentile(ms, 50), "rate /s": kept}

    return measure


async def _publish_at(a: App, rate: float, total: int) -> float:
    """Publish ``total`` events at ``rate`` a second, each stamped with the wall-clock time it
    was due; the rate kept."""
    publishing: set[asyncio.Task[str]] = set()
    began, wall = time.perf_counter(), time.time()
    sent = 0
    while sent < total:
        # Every event due by now, stamped with when it was due.
        due_now = min(total, int((time.perf_counter() - began) * rate) + 1)
        for n in range(sent, due_now):
            event = Stamped(n, wall + n / rate, PAD)
            task = asyncio.create_task(a.publish(event, stream=f"s-{n % STREAMS}"))
            publishing.add(task)
            task.add_done_callback(publishing.discard)
        sent = due_now
        await asyncio.sleep(0.001)
    kept = total / (time.perf_counter() - began)
    await asyncio.gather(*publishing)
    return kept


async def _reply(conn: Connection, timeout: float, what: str) -> Any:
    """What B sends next through ``conn`` (None if nothing came within ``timeout``)."""
    if await _until(conn.poll, timeout, what):
        return conn.recv()
    return None


def _run_b(url: str, namespace: str, tmp: str, skip: int, counted: int, conn: Connection) -> None:
    """Service B in this (spawned) process: says when its consumer is made and when the
    warm-up event was handled, then sends the lags (seconds) of events ``skip`` onwards once
    ``counted`` were handled (or what it has after two minutes)."""

    async def run() -> None:
        b = _service_b(url, namespace, tmp)
        lags: list[float] = []
        warm, done = asyncio.Event(), asyncio.Event()

        @b.subscriber("lag")
        async def lag(event: Stamped, ctx: Context) -> None:
            if event.n < 0:
                warm.set()
            elif event.n >= skip:
                lags.append(time.time() - event.due)
                if len(lags) >= counted:
                    done.set()

        async with b:
            await b.links[0].open()
            worker = b.worker()
            running = asyncio.create_task(worker.run())
            conn.send("ready")
            for event, reply in ((warm, "warm"), (done, None)):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 120)
                conn.send(reply or lags)
            worker.stop()
            await running

    asyncio.run(run())


def backlog(url: str, clean: Clean, *, events: int) -> Callable[[], Awaitable[dict[str, float]]]:
    async def measure() -> dict[str, float]:
        async with _services(url, clean) as (a, _):
            for start in range(0, events, 10_000):
                # Straight into A's log, 10,000 a transaction: no relay is running.
                streams: dict[str, list[object]] = {}
                for n in range(start, min(events, start + 10_000)):
                    new = a.factory.new(Stamped(n, 0.0, PAD))
                    streams.setdefault(f"s-{n % STREAMS}", []).append(new)
                appends = [AppendOp(s, m) for s, m in streams.items()]  # type: ignore[arg-type]
                await a.committer.commit(Transaction(appends=appends))
            relay = a.links[0].relay
            worker = a.worker()
            running = asyncio.create_task(worker.run())
            # (seconds, messages confirmed) at each change: confirmations come in bursts of
            # batches, so each window's rate is taken between the bursts that bound it.
            seen = [(time.perf_counter(), 0)]
            deadline = time.monotonic() + 3600
            while seen[-1][1] < events and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                if relay.relayed != seen[-1][1]:
                    seen.append((time.perf_counter(), relay.relayed))
            worker.stop()
            await running
        check(seen[-1][1] >= events, f"backlog: relayed {seen[-1][1]} of {events}")
        # From the first confirmation (not the connection or the pipeline filling up).
        start = seen[1] if len(seen) > 1 else seen[0]
        quarter = (events - start[1]) // 4
        first = _rate(start, next(p for p in seen if p[1] >= start[1] + quarter))
        last = _rate(next(p for p in seen if p[1] >= events - quarter), seen[-1])
        if last == 0.0:  # the last quarter came in one burst: from the burst before it
            last = _rate(next(p for p in reversed(seen) if p[1] < events - quarter), seen[-1])
        whole = _rate(start, seen[-1])
        return {"end/start x": last / first, "start /s": first, "end /s": last, "all /s": whole}

    return measure


def _rate(since: tuple[float, int], until: tuple[float, int]) -> float:
    seconds = until[0] - since[0]
    return (until[1] - since[1]) / seconds if seconds > 0 else 0.0
