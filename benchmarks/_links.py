"""The latency and backlog measurements of ``transports.py``: service A → relay → broker → B.

* ``latency(url, ...)``: A publishes at a steady ``rate`` (events/s) for ``seconds``, after one
  second at that rate that is not counted (the ramp from idle), each event stamped with the time
  it was due (so a publisher falling behind counts against it); B's subscriber takes the time it
  handled it. Values: p99 and p50 publish→handled in ms, and the rate A kept.
* ``backlog(url, ...)``: A's log is filled with ``events`` events with no relay running (B's
  queue or consumer made first, so the broker stores them for B), then A's relay starts and
  relays them all. Values: the relay's rate over the last quarter of the backlog divided by its
  rate over the first quarter after its first confirmation (1: flat), then both rates and the
  whole run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

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


@contextlib.asynccontextmanager
async def _services(url: str, clean: Clean) -> AsyncIterator[tuple[App, App]]:
    """A (publishes ``Stamped`` to ``ticks``) and B (subscribes), each on its SQLite FULL file,
    B's queue made; nothing running yet."""
    namespace = f"b{uuid.uuid4().hex[:10]}"
    options = {"idempotent": False} if url.startswith("kafka") else {}
    with tempfile.TemporaryDirectory() as tmp:
        a = App("bench-a", store=f"sqlite:///{Path(tmp) / 'a.db'}")
        a.connect(url, Routes().publish(Stamped, topic="ticks"), namespace=namespace, **options)
        b = App("bench-b", store=f"sqlite:///{Path(tmp) / 'b.db'}")
        b.connect(url, Routes().subscribe("ticks", Stamped), namespace=namespace, **options)
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
        lags: list[float] = []
        async with _services(url, clean) as (a, b):

            @b.subscriber("lag")
            async def lag(event: Stamped, ctx: Context) -> None:
                if event.n >= skip:
                    lags.append(time.perf_counter() - event.due)

            workers = [a.worker(), b.worker()]
            running = [asyncio.create_task(w.run()) for w in workers]
            await a.publish(Stamped(-1, 0.0, PAD), stream="warm-up")
            await _until(lambda: b.links[0].inbox.received >= 1, 60, "latency warm-up")
            publishing: set[asyncio.Task[str]] = set()
            began = time.perf_counter()
            sent = 0
            while sent < total:
                # Every event due by now, stamped with when it was due.
                due_now = min(total, int((time.perf_counter() - began) * rate) + 1)
                for n in range(sent, due_now):
                    event = Stamped(n, began + n / rate, PAD)
                    task = asyncio.create_task(a.publish(event, stream=f"s-{n % STREAMS}"))
                    publishing.add(task)
                    task.add_done_callback(publishing.discard)
                sent = due_now
                await asyncio.sleep(0.001)
            kept = total / (time.perf_counter() - began)
            counted = total - skip
            await _until(lambda: len(lags) >= counted, 120, f"latency on {url.split('://')[0]}")
            for worker in workers:
                worker.stop()
            await asyncio.gather(*running)
        check(len(lags) == counted, f"latency: handled {len(lags)} of {counted}")
        ms = [lag * 1000 for lag in lags] or [0.0]
        return {"p99 ms": percentile(ms, 99), "p50 ms": percentile(ms, 50), "rate /s": kept}

    return measure


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
