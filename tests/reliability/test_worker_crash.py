"""Crash safety of the worker: SIGKILL it 20 times while it delivers 10,000 events, then let it finish.

The app (``_crash_app.py``) has two subscriptions on ``Tick(stream_n, n)`` over 100 streams of 100
events: a projection written through ``ctx.get``/``ctx.put`` (committed with the checkpoint), and a
side effect appending a line to a file per process. Half the events are appended before the first
worker starts, half while workers run and are being killed. Each worker process is killed with
SIGKILL at a random moment (fixed seed) 0.05-0.6 s after it is seen handling messages; the next one
starts at once, alternately under a fresh worker id (it must wait for the dead one's leases to
expire) and under the dead one's id (it takes its partitions back at once). The last one runs until
both subscriptions' checkpoints reach the end of the log, then stops on SIGTERM.

Then: the projection applied every event exactly once and in order (per stream: last == count ==
100, no ordering violation); the side effect saw every message at least once; within one process,
each stream's side effects are strictly consecutive, a new process starts each stream no further
than one past what was seen before (nothing skipped), and never redoes a message at or before the
checkpoint its partition had when the previous process died (only uncommitted work is redone).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest
from _crash_app import EFFECTS, PARTITIONS, PROJECTION, Tick, build_app, stream_name
from _worker_procs import (
    WorkerProc,
    caught_up,
    checkpoints,
    describe,
    effects_of,
    has_effects,
    log_positions,
    sigkill,
    sigterm,
    start_worker,
    wait_for,
)

from tidings import App
from tidings.delivery.worker import partition_of

SEED = 20261127
STREAMS = 100
PER_STREAM = 100
PER_APPEND = 10  # events per app.append call: one round appends PER_APPEND to every stream
ROUNDS = PER_STREAM // PER_APPEND
ROUNDS_BEFORE = ROUNDS // 2
KILLS = 20
LEASE_TTL = 1.0
BATCH_SIZE = 50
HANDLER_DELAY = 0.001
PROGRESS_TIMEOUT = 30.0
FINISH_TIMEOUT = 60.0


async def publish_round(app: App, r: int) -> None:
    for s in range(STREAMS):
        first = r * PER_APPEND + 1
        await app.append(
            stream_name(s), [Tick(stream_n=s, n=n) for n in range(first, first + PER_APPEND)]
        )


async def publish_while_running(app: App, rng: random.Random) -> None:
    for r in range(ROUNDS_BEFORE, ROUNDS):
        await asyncio.sleep(rng.uniform(1.0, 2.0))  # spreads the load, not a synchronisation
        await publish_round(app, r)


@pytest.mark.timeout(180)
async def test_sigkill_worker_twenty_times(tmp_path: Path) -> None:
    started = time.monotonic()
    db = tmp_path / "crash.db"
    effects = tmp_path / "effects"
    effects.mkdir()
    rng = random.Random(SEED)
    publish_rng = random.Random(SEED + 1)
    app = build_app(str(db), str(effects))
    workers: list[WorkerProc] = []
    # checkpoints of the side-effect subscription when each killed worker was gone
    after_kill: list[dict[int, tuple[int, str | None]]] = []
    kill_delays: list[float] = []
    async with app:
        for r in range(ROUNDS_BEFORE):
            await publish_round(app, r)
        publisher = asyncio.create_task(publish_while_running(app, publish_rng))
        try:
            worker_id = ""
            for kill in range(KILLS):
                # Every other restart comes back under the dead worker's id.
                if kill % 2 == 0:
                    worker_id = f"crash-{kill}"
                w = await start_worker(
                    db,
                    effects,
                    worker_id,
                    lease_ttl=LEASE_TTL,
                    batch_size=BATCH_SIZE,
                    delay=HANDLER_DELAY,
                )
                workers.append(w)

                async def progressing(w: WorkerProc = w) -> bool:
                    if w.proc.returncode is not None:
                        raise AssertionError(f"worker exited early:\n{describe([w])}")
                    return has_effects(effects, w.pid)

                await wait_for(
                    progressing,
                    PROGRESS_TIMEOUT,
                    lambda kill=kill: f"kill {kill}: worker handling messages\n{describe(workers)}",
                )
                delay = rng.uniform(0.05, 0.6)
                kill_delays.append(delay)
                await asyncio.sleep(delay)  # the moment of the kill, not a synchronisation
                await sigkill(w)
                after_kill.append(await checkpoints(app, EFFECTS))
                assert not await caught_up(app), (
                    f"kill {kill} came after the worker had caught up: it interrupted nothing "
                    "(the test needs more work per kill)"
                )
            await publisher
        finally:
            if not publisher.done():
                publisher.cancel()
            for w in workers:
                if w.proc.returncode is None:
                    w.proc.kill()
                    await w.proc.wait()
        kills_done = time.monotonic()

        final = await start_worker(
            db, effects, "crash-final", lease_ttl=LEASE_TTL, batch_size=BATCH_SIZE, delay=0.0
        )
        workers.append(final)
        try:
            await wait_for(
                lambda: caught_up(app),
                FINISH_TIMEOUT,
                lambda: f"the last worker to finish\n{describe(workers[-3:])}",
            )
        finally:
            status = await sigterm(final)
        assert status == 0, describe([final])
        finished = time.monotonic()

        docs = await app.documents("last", limit=10 * STREAMS)
        violations = await app.documents("violations", limit=10_000)
        held = await app.store.held()
        positions = await log_positions(app)
        parts = await app.store.partitions()

    # --- the log and the checkpoints ---------------------------------------------------------------
    assert len(positions) == STREAMS * PER_STREAM
    last = max(gp for gp, _ in positions.values())
    for p in parts:
        if p.subscription in (PROJECTION, EFFECTS):
            assert p.position == last, p
            assert p.owner is None, p  # the last worker released its leases on SIGTERM
    assert held == [], held

    # --- the projection: exactly once, in order ------------------------------------------------------
    assert violations == {}, f"{len(violations)} ordering violations, e.g. {list(violations)[:5]}"
    wrong = {
        key: doc
        for key, doc in docs.items()
        if (doc["last"], doc["count"]) != (PER_STREAM, PER_STREAM)
    }
    assert not wrong, f"{len(wrong)} streams not applied exactly once: {list(wrong.items())[:5]}"
    assert sorted(docs) == sorted(stream_name(s) for s in range(STREAMS))

    # --- the side effect: at least once, in order per process, nothing skipped ------------------------
    seen: set[str] = set()
    max_n: dict[str, int] = defaultdict(int)
    redone = 0
    for index, w in enumerate(workers):
        lines = effects_of(effects, w.pid)
        by_stream: dict[str, list[int]] = defaultdict(list)
        for e in lines:
            gp, stream = positions[e.message_id]  # KeyError: an id that is not in the log
            assert stream == e.stream, e
            by_stream[e.stream].append(e.n)
            if e.message_id in seen:
                redone += 1
            seen.add(e.message_id)
            if index > 0:
                # Nothing at or before the checkpoint of its partition when the previous worker
                # was killed is handled again.
                checkpoint, _ = after_kill[index - 1][partition_of(e.stream, PARTITIONS)]
                assert gp > checkpoint, (
                    f"worker {index} (pid {w.pid}) redid {e} at global position {gp}, "
                    f"at or before its partition's checkpoint {checkpoint}"
                )
        for stream, ns in by_stream.items():
            assert ns[0] <= max_n[stream] + 1, (
                f"pid {w.pid} started {stream} at n={ns[0]}, but only up to "
                f"{max_n[stream]} had been handled: skipped"
            )
            gaps = [(a, b) for a, b in itertools.pairwise(ns) if b != a + 1]
            assert not gaps, f"pid {w.pid}, {stream}: not consecutive at {gaps[:5]} in {ns}"
            max_n[stream] = max(max_n[stream], ns[-1])
    missing = set(positions) - seen
    assert not missing, f"{len(missing)} messages never reached the side effect"

    print(
        f"\n{KILLS} kills (delays {min(kill_delays):.2f}-{max(kill_delays):.2f}s) in "
        f"{kills_done - started:.1f}s, finished {finished - kills_done:.1f}s later; "
        f"{redone} side effects redone after a kill"
    )
