"""Worker processes whose batches outlast the lease, on SQLite and PostgreSQL (issue 20, item 1).

Both tests run ``_crash_app.py`` (a ``ctx.get``/``ctx.put`` projection that records per-stream
ordering violations, and a side effect appending one line per message to a file per process) in
``python -m tidings worker`` processes with ``lease_ttl=1`` and the default batch of 500.

* ``test_two_workers_share_a_backlog_whose_batch_outlasts_the_lease``: a backlog of 600 events and
  a 10 ms handler (half a batch takes 2.5 s, more than twice the lease), drained by one worker,
  then a second backlog by two. The two make progress — they used to take the partitions from
  each other and commit nothing — and are not slower than the one; the projection is
  exactly-once, no side effect is done twice and no lease is lost.
* ``test_three_workers_with_handlers_longer_than_the_lease_one_killed``: each handler takes 1.25
  times the lease. Three workers share one event per partition; one is killed after its first
  side effect. The two others, though inside a handler, hold every partition within the lease time
  of the kill; only the message the killed worker had in flight is handled twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _crash_app import EFFECTS, PARTITIONS, PROJECTION, Tick, build_app_at, stream_name
from _worker_procs import (
    WorkerProc,
    caught_up,
    checkpoints,
    describe,
    effects_of,
    log_positions,
    sigkill,
    sigterm,
    start_worker,
    wait_for,
)

from tidings import App
from tidings.delivery.worker import partition_of

LEASE_TTL = 1.0
BATCH_SIZE = 500
#: as in test_two_workers: a takeover comes within the lease time; the margin is for process
#: scheduling and this test's polling
TAKEOVER_MARGIN = 0.25
TIMEOUT = 60.0
SUBSCRIPTIONS = (PROJECTION, EFFECTS)


@dataclass
class Target:
    """Where the app and its workers keep their store."""

    url: str
    effects: Path

    async def start(self, worker_id: str, delay: float) -> WorkerProc:
        return await start_worker(
            None,
            self.effects,
            worker_id,
            lease_ttl=LEASE_TTL,
            batch_size=BATCH_SIZE,
            delay=delay,
            store_url=self.url,
        )


@pytest.fixture(params=["sqlite", "postgres"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'busy.db'}"
    else:
        url = f"{request.getfixturevalue('postgres_url')}?schema={request.getfixturevalue('pg_schema')}"
    effects = tmp_path / "effects"
    effects.mkdir()
    yield Target(url, effects)


async def stop_all(workers: list[WorkerProc]) -> None:
    for w in workers:
        if w.proc.returncode is None:
            w.proc.kill()
            await w.proc.wait()


def check_projection(docs: dict[str, dict], violations: dict[str, object], per_stream: int) -> None:
    assert violations == {}, f"{len(violations)} ordering violations, e.g. {list(violations)[:5]}"
    wrong = {
        k: (d["last"], d["count"])
        for k, d in docs.items()
        if (d["last"], d["count"]) != (per_stream, per_stream)
    }
    assert not wrong, f"{len(wrong)} streams not applied exactly once: {list(wrong.items())[:5]}"


# --- 1. a backlog whose batch outlasts the lease, one worker then two ---------------------------

STREAMS = 40
PER_BACKLOG = 15
HANDLER_DELAY = 0.01
#: two workers must drain a backlog at least this fast relative to one (expected: about twice)
SPEEDUP_FLOOR = 0.8


async def append_backlog(app: App, first: int) -> None:
    for s in range(STREAMS):
        ticks = [Tick(stream_n=s, n=n) for n in range(first, first + PER_BACKLOG)]
        await app.append(stream_name(s), ticks)


async def drain_with(target: Target, app: App, ids: list[str], workers: list[WorkerProc]) -> float:
    """Start workers ``ids``, wait until they caught up, stop them; the seconds it took."""
    started = time.monotonic()
    mine = [await target.start(wid, HANDLER_DELAY) for wid in ids]
    workers.extend(mine)
    await wait_for(
        lambda: caught_up(app), TIMEOUT, lambda: f"{ids} to drain the backlog\n{describe(mine)}"
    )
    took = time.monotonic() - started
    for w in mine:
        assert await sigterm(w) == 0, describe([w])
    return took


@pytest.mark.timeout(180)
async def test_two_workers_share_a_backlog_whose_batch_outlasts_the_lease(target: Target) -> None:
    app = build_app_at(target.url, str(target.effects))
    workers: list[WorkerProc] = []
    async with app:
        try:
            await append_backlog(app, 1)
            one = await drain_with(target, app, ["one"], workers)
            await append_backlog(app, 1 + PER_BACKLOG)
            two = await drain_with(target, app, ["two-a", "two-b"], workers)
        finally:
            await stop_all(workers)
        docs = await app.documents("last", limit=10 * STREAMS)
        violations = await app.documents("violations", limit=10_000)
        positions = await log_positions(app)
    print(f"\none worker drained {STREAMS * PER_BACKLOG} events in {one:.2f}s, two in {two:.2f}s")

    check_projection(docs, violations, 2 * PER_BACKLOG)
    lines = {w.worker_id: effects_of(target.effects, w.pid) for w in workers}
    counted = Counter(e.message_id for wl in lines.values() for e in wl)
    assert set(counted) == set(positions), "some messages never reached the side effect"
    twice = [m for m, c in counted.items() if c > 1]
    assert not twice, f"{len(twice)} side effects done twice without a kill\n{describe(workers)}"
    assert lines["two-a"] and lines["two-b"], "one of the two workers handled nothing"
    for w in workers:
        assert "lease lost" not in w.log_text(), describe([w])
    assert two <= one / SPEEDUP_FLOOR, (
        f"two workers took {two:.2f}s for a backlog one worker drained in {one:.2f}s"
    )


# --- 2. handlers longer than the lease, three workers, one killed --------------------------------

LONG_HANDLER = 1.25 * LEASE_TTL


def one_stream_per_partition() -> list[int]:
    """Stream numbers whose streams fall one in each partition."""
    found: dict[int, int] = {}
    s = 0
    while len(found) < PARTITIONS:
        found.setdefault(partition_of(stream_name(s), PARTITIONS), s)
        s += 1
    return sorted(found.values())


@pytest.mark.timeout(180)
async def test_three_workers_with_handlers_longer_than_the_lease_one_killed(
    target: Target,
) -> None:
    app = build_app_at(target.url, str(target.effects))
    ids = ["long-a", "long-b", "long-c"]
    streams = one_stream_per_partition()
    workers: list[WorkerProc] = []
    async with app:
        try:
            workers = [await target.start(wid, LONG_HANDLER) for wid in ids]

            async def shared() -> bool:
                for sub in SUBSCRIPTIONS:
                    held = Counter(owner for _, owner in (await checkpoints(app, sub)).values())
                    if sorted(held.values()) != [2, 3, 3] or set(held) != set(ids):
                        return False
                return True

            await wait_for(shared, TIMEOUT, lambda: f"a share for each\n{describe(workers)}")
            # The victim holds at least two partitions of the side effect, so two messages.
            victim = workers[0]
            for s in streams:
                await app.append(stream_name(s), [Tick(stream_n=s, n=1)])
            await wait_for(
                lambda: _has_effects(target, victim),
                TIMEOUT,
                lambda: f"{victim.worker_id} to handle a message\n{describe(workers)}",
                interval=0.005,
            )
            killed_at = await sigkill(victim)
            at_kill = await checkpoints(app, EFFECTS)
            survivors = {w.worker_id for w in workers[1:]}

            async def taken_over() -> bool:
                for sub in SUBSCRIPTIONS:
                    owners = {owner for _, owner in (await checkpoints(app, sub)).values()}
                    if not owners <= survivors:
                        return False
                return True

            await wait_for(
                taken_over,
                TIMEOUT,
                lambda: f"the survivors to take every partition\n{describe(workers)}",
                interval=0.005,
            )
            takeover = time.monotonic() - killed_at
            await wait_for(
                lambda: caught_up(app), TIMEOUT, lambda: f"the survivors\n{describe(workers)}"
            )
            for w in workers[1:]:
                assert await sigterm(w) == 0, describe([w])
        finally:
            await stop_all(workers)
        docs = await app.documents("last", limit=10 * STREAMS)
        violations = await app.documents("violations", limit=10_000)
        positions = await log_positions(app)
    print(f"\ntakeover {takeover:.2f}s after the kill, inside {LONG_HANDLER}s handlers")

    check_projection(docs, violations, 1)
    assert len(docs) == len(streams)
    lines = {w.worker_id: effects_of(target.effects, w.pid) for w in workers}
    counted = Counter(e.message_id for wl in lines.values() for e in wl)
    assert set(counted) == set(positions), "some messages never reached the side effect"
    in_flight = {
        m
        for m, (gp, stream) in positions.items()
        if at_kill[partition_of(stream, PARTITIONS)][1] == victim.worker_id
        and gp > at_kill[partition_of(stream, PARTITIONS)][0]
    }
    twice = {m for m, c in counted.items() if c > 1}
    assert twice <= in_flight, f"handled twice but not in flight at the kill: {twice - in_flight}"
    # A slice ends after the first message that outlasts a third of the lease: one in flight.
    assert len(twice) <= 1, f"{len(twice)} side effects redone after one kill"
    for w in workers[1:]:
        assert "lease lost" not in w.log_text(), describe([w])
    assert any("took over partitions" in w.log_text() for w in workers[1:]), describe(workers)
    assert takeover <= LEASE_TTL + TAKEOVER_MARGIN, (
        f"the survivors held every partition {takeover:.2f}s after the kill; "
        f"lease_ttl is {LEASE_TTL}s\n{describe(workers)}"
    )


async def _has_effects(target: Target, worker: WorkerProc) -> bool:
    return bool(effects_of(target.effects, worker.pid))
