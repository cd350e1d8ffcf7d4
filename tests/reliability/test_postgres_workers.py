"""Worker processes on PostgreSQL: one of three killed mid-run; connections terminated under load.

Both tests run ``_crash_app.py`` (a ``ctx.get``/``ctx.put`` projection that records per-stream
ordering violations, and a side effect appending one line per message to a file per process) in
``python -m tidings worker`` processes on a schema of their own.

* ``test_three_workers_one_killed``: three workers (``lease_ttl=1``) share both subscriptions while
  6,000 events over 60 streams are appended; once all three are handling them, one is killed with
  SIGKILL. The two others must hold every partition within the lease time (+ a small margin) of the
  kill, then finish: nothing lost, per-stream order kept, the projection applied exactly once, and
  only what the killed worker had in flight handled twice by the side effect.
* ``test_connections_terminated_during_handling_and_append``: one worker handles while this process
  appends (four tasks on two stores: one with the default retry budget, which retries lost
  connections by itself, and one with none, so that every lost connection reaches the caller);
  meanwhile every connection of the worker and the appenders (found by the ``application_name``
  each puts in its URL, which ``PostgresStore`` passes to libpq) is terminated with
  ``pg_terminate_backend``, round after round. An append either succeeds or raises a
  ``TidingsError``; then it is committed again with the same message ids (decided before the first
  try). The log must hold every message exactly once, in order per stream; the worker must
  reconnect and finish; the projection stays exactly-once and the side effect sees every message at
  least once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _crash_app import EFFECTS, PARTITIONS, PROJECTION, Tick, build_app_at, stream_name
from _worker_procs import (
    WorkerProc,
    caught_up,
    checkpoints,
    describe,
    effects_of,
    sigkill,
    sigterm,
    start_worker,
    wait_for,
)

from tidings import App
from tidings.backends.postgres import PostgresStore
from tidings.delivery.worker import partition_of
from tidings.errors import StoreError, TidingsError
from tidings.messages import Envelope, NewMessage
from tidings.records import ANY, AppendOp, Transaction

SEED = 20261201
LEASE_TTL = 1.0
#: as in test_two_workers: the worker promises a takeover "after at most [lease_ttl]"; the margin is
#: for process scheduling and this test's polling
TAKEOVER_MARGIN = 0.25
BATCH_SIZE = 50
TIMEOUT = 60.0
SUBSCRIPTIONS = (PROJECTION, EFFECTS)


def with_options(url: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def store_url(postgres_url: str, schema: str, **options: str) -> str:
    return with_options(postgres_url, schema=schema, **options)


async def owners(app: App) -> dict[str, Counter[str | None]]:
    """``{subscription: Counter(owner -> partitions held)}``."""
    return {
        sub: Counter(owner for _, owner in (await checkpoints(app, sub)).values())
        for sub in SUBSCRIPTIONS
    }


async def read_log(app: App) -> list[Envelope]:
    """Every row of the log, in global order (duplicates, if any, included)."""
    found: list[Envelope] = []
    while True:
        page = await app.store.read_all(after=found[-1].global_position if found else 0, limit=5000)
        if not page:
            return found
        found.extend(page)


def check_projection(
    docs: dict[str, Any], violations: dict[str, Any], streams: int, n: int
) -> None:
    assert violations == {}, f"{len(violations)} ordering violations, e.g. {list(violations)[:5]}"
    wrong = {
        k: (d["last"], d["count"]) for k, d in docs.items() if (d["last"], d["count"]) != (n, n)
    }
    assert not wrong, f"{len(wrong)} streams not applied exactly once: {list(wrong.items())[:5]}"
    assert sorted(docs) == sorted(stream_name(s) for s in range(streams))
    for key, doc in docs.items():
        assert sum(doc["by"].values()) == doc["count"], (key, doc)


def consecutive_per_process(lines_by_worker: dict[str, list[Any]]) -> None:
    """Within one process, each stream's side effects are strictly consecutive."""
    for wid, lines in lines_by_worker.items():
        by_stream: dict[str, list[int]] = defaultdict(list)
        for e in lines:
            by_stream[e.stream].append(e.n)
        for stream, ns in by_stream.items():
            gaps = [(x, y) for x, y in itertools.pairwise(ns) if y != x + 1]
            assert not gaps, f"{wid}, {stream}: not consecutive at {gaps[:5]}"


async def kill_all(workers: list[WorkerProc]) -> None:
    for w in workers:
        if w.proc.returncode is None:
            w.proc.kill()
            await w.proc.wait()


# --- 1. three workers, one killed ------------------------------------------------------------------

STREAMS = 60
PER_STREAM = 100
PER_APPEND = 10
ROUNDS = PER_STREAM // PER_APPEND
#: the kill comes once this many rounds are appended and all three workers are handling them
KILL_AFTER_ROUNDS = 4
ROUND_PAUSE = 0.4
HANDLER_DELAY = 0.001


@pytest.mark.timeout(120)
async def test_three_workers_one_killed(postgres_url: str, pg_schema: str, tmp_path: Path) -> None:
    url = store_url(postgres_url, pg_schema)
    effects = tmp_path / "effects"
    effects.mkdir()
    rng = random.Random(SEED)
    app = build_app_at(url, str(effects))
    published = 0

    async def publish() -> None:
        nonlocal published
        for r in range(ROUNDS):
            for s in range(STREAMS):
                first = r * PER_APPEND + 1
                await app.append(
                    stream_name(s),
                    [Tick(stream_n=s, n=n) for n in range(first, first + PER_APPEND)],
                )
            published = r + 1
            await asyncio.sleep(ROUND_PAUSE)  # spreads the load, not a synchronisation

    async with app:
        await app.store.last_position()  # the schema exists before the workers start
        workers = [
            await start_worker(
                None,
                effects,
                f"three-{name}",
                lease_ttl=LEASE_TTL,
                batch_size=BATCH_SIZE,
                delay=HANDLER_DELAY,
                store_url=url,
            )
            for name in "abc"
        ]
        publisher: asyncio.Task[None] | None = None
        try:
            ids = {w.worker_id for w in workers}

            async def shared() -> bool:
                held = await owners(app)
                return all(set(c) == ids and sorted(c.values()) == [2, 3, 3] for c in held.values())

            await wait_for(shared, TIMEOUT, lambda: f"a 3/3/2 share\n{describe(workers)}")
            publisher = asyncio.create_task(publish())

            async def all_busy() -> bool:
                if publisher.done():
                    publisher.result()
                    raise AssertionError("everything was published before all three were busy")
                return published >= KILL_AFTER_ROUNDS and all(
                    effects_of(effects, w.pid) for w in workers
                )

            await wait_for(all_busy, TIMEOUT, lambda: f"all three busy\n{describe(workers)}")
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # the moment of the kill
            victim = workers[rng.randrange(len(workers))]
            survivors = [w for w in workers if w is not victim]
            killed_at = await sigkill(victim)
            rounds_at_kill = published
            at_kill = {sub: await checkpoints(app, sub) for sub in SUBSCRIPTIONS}
            assert rounds_at_kill < ROUNDS, "the kill came after everything was published"
            assert not await caught_up(app), "the kill came after all the work was done"
            for sub, parts in at_kill.items():
                assert victim.worker_id in {o for _, o in parts.values()}, (sub, parts)

            survivor_ids = {w.worker_id for w in survivors}

            async def taken_over() -> bool:
                held = await owners(app)
                return all(
                    set(c) == survivor_ids and sum(c.values()) == PARTITIONS for c in held.values()
                )

            await wait_for(
                taken_over,
                TIMEOUT,
                lambda: f"the survivors to take every partition\n{describe(workers)}",
                interval=0.005,
            )
            takeover = time.monotonic() - killed_at
            await publisher
            await wait_for(lambda: caught_up(app), TIMEOUT, lambda: f"the end\n{describe(workers)}")
            for w in survivors:
                status = await sigterm(w)
                assert status == 0, describe([w])
            docs = await app.documents("last", limit=10 * STREAMS)
            violations = await app.documents("violations", limit=10_000)
            held_rows = await app.store.held()
            log_rows = await read_log(app)
        finally:
            if publisher is not None and not publisher.done():
                publisher.cancel()
            await kill_all(workers)

    print(
        f"\nkilled {victim.worker_id} after {rounds_at_kill} of {ROUNDS} rounds; "
        f"takeover {takeover:.2f}s after the kill"
    )
    assert held_rows == [], held_rows
    positions = {e.id: (e.global_position, e.stream) for e in log_rows}
    assert len(log_rows) == len(positions) == STREAMS * PER_STREAM

    # --- the projection: exactly once, in order ----------------------------------------------------
    check_projection(docs, violations, STREAMS, PER_STREAM)
    by_pid = Counter({pid: c for d in docs.values() for pid, c in d["by"].items()})
    assert set(by_pid) <= {str(w.pid) for w in workers}, by_pid

    # --- the side effect: nothing lost; twice only for what the victim had in flight ---------------
    lines = {w.worker_id: effects_of(effects, w.pid) for w in workers}
    for wid, wl in lines.items():
        assert wl, f"{wid} handled nothing"
    counted = Counter(e.message_id for wl in lines.values() for e in wl)
    assert set(counted) <= set(positions), "a side effect of a message that is not in the log"
    missing = set(positions) - set(counted)
    assert not missing, f"{len(missing)} messages never reached the side effect"
    victim_ids = {e.message_id for e in lines[victim.worker_id]}
    in_flight = set()
    for message_id, (gp, stream) in positions.items():
        position, owner = at_kill[EFFECTS][partition_of(stream, PARTITIONS)]
        if owner == victim.worker_id and gp > position and message_id in victim_ids:
            in_flight.add(message_id)
    twice = {m: c for m, c in counted.items() if c > 1}
    assert all(c == 2 for c in twice.values()), twice
    unexpected = set(twice) - in_flight
    assert not unexpected, (
        f"{len(unexpected)} messages handled twice that the killed worker did not have in flight"
    )
    assert len(twice) <= BATCH_SIZE, f"{len(twice)} redone: more than one batch was in flight"
    consecutive_per_process(lines)
    print(f"{len(twice)} side effects redone of {len(in_flight)} in flight at the kill")
    # Last, so that a slow takeover does not hide any of the checks above.
    assert takeover <= LEASE_TTL + TAKEOVER_MARGIN, (
        f"the survivors held every partition {takeover:.2f}s after {victim.worker_id} was killed; "
        f"lease_ttl is {LEASE_TTL}s"
    )


# --- 2. connections terminated under load ----------------------------------------------------------

T_STREAMS = 40
T_PER_STREAM = 60
T_PER_APPEND = 5
T_ROUNDS = T_PER_STREAM // T_PER_APPEND
APPENDERS = 4
APPEND_PAUSE = 0.03
T_HANDLER_DELAY = 0.002
MIN_KILL_ROUNDS = 8
KILL_PAUSE = (0.15, 0.4)

_KILL = """
SELECT application_name, pg_terminate_backend(pid)
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ANY(%s)
"""


@pytest.mark.timeout(120)
async def test_connections_terminated_during_handling_and_append(
    postgres_url: str, pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    caplog.set_level(logging.INFO, logger="tidings.postgres")

    # application_name tells this test's connections from every other one on the server.
    worker_name = f"w-{pg_schema}"
    appender_name = f"a-{pg_schema}"
    worker_url = store_url(postgres_url, pg_schema, application_name=worker_name)
    effects = tmp_path / "effects"
    effects.mkdir()
    rng = random.Random(SEED + 1)
    app = build_app_at(
        store_url(postgres_url, pg_schema, application_name=appender_name), str(effects)
    )
    # A second appender whose store does not retry by itself (its retry budget is set to 0 once it
    # is open): every lost connection reaches the caller as an error, and the append is retried by
    # this test. The first one keeps the default budget and retries inside the store.
    impatient_store = PostgresStore(
        with_options(postgres_url, application_name=appender_name),
        schema=pg_schema,
        max_connections=2,
    )
    impatient = build_app_at(impatient_store, str(effects))

    # Every append is decided (and its ids fixed) before the first try, so that a retry after an
    # error is the same append: App.append makes new ids on every call, so this goes to the store.
    plan: dict[str, list[list[NewMessage]]] = {}
    expected: dict[str, list[str]] = {}
    for s in range(T_STREAMS):
        batches = [
            [
                app.factory.new(Tick(stream_n=s, n=n))
                for n in range(r * T_PER_APPEND + 1, (r + 1) * T_PER_APPEND + 1)
            ]
            for r in range(T_ROUNDS)
        ]
        plan[stream_name(s)] = batches
        expected[stream_name(s)] = [m.id for b in batches for m in b]
    errors: dict[str, list[TidingsError]] = {"patient": [], "impatient": []}
    appends_done = 0
    committed_anyway: list[str] = []

    async def append(which: str, stream: str, batch: list[NewMessage]) -> None:
        nonlocal appends_done
        store = (app if which == "patient" else impatient).store
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                await store.commit(Transaction([AppendOp(stream, batch, ANY)]))
                appends_done += 1
                return
            except TidingsError as exc:  # anything else (a driver error leaking) fails the test
                errors[which].append(exc)
                assert time.monotonic() < deadline, f"{stream}: still failing: {exc!r}"
                # Whether it was committed all the same (then only the ids keep the retry from
                # appending it twice): counted, for the report.
                stored = {e.id for e in await app.store.read_stream(stream)}
                if batch[0].id in stored:
                    committed_anyway.append(batch[0].id)
                await asyncio.sleep(0.01)

    async def appender(k: int) -> None:
        which = "patient" if k % 2 == 0 else "impatient"
        mine = [stream_name(s) for s in range(k, T_STREAMS, APPENDERS)]
        for r in range(T_ROUNDS):
            for stream in mine:
                await append(which, stream, plan[stream][r])
                await asyncio.sleep(APPEND_PAUSE)

    kills: list[Counter[str]] = []

    async with app, impatient:
        await app.store.last_position()  # the schema exists before the worker starts
        impatient_store.retry_timeout = 0.0
        worker = await start_worker(
            None,
            effects,
            "terminated",
            lease_ttl=LEASE_TTL,
            batch_size=BATCH_SIZE,
            delay=T_HANDLER_DELAY,
            store_url=worker_url,
        )
        workers = [worker]
        appenders: asyncio.Future[list[None]] | None = None
        try:
            await wait_for(
                lambda: _owns_all(app, worker),
                TIMEOUT,
                lambda: f"the worker's claims\n{describe(workers)}",
            )
            appenders = asyncio.gather(*(appender(k) for k in range(APPENDERS)))
            behind_at_kill = 0
            async with await psycopg.AsyncConnection.connect(
                postgres_url, autocommit=True, application_name=f"k-{pg_schema}"
            ) as killer:
                while len(kills) < MIN_KILL_ROUNDS or not appenders.done():
                    assert worker.proc.returncode is None, describe(workers)
                    await asyncio.sleep(rng.uniform(*KILL_PAUSE))
                    if not await caught_up(app):
                        behind_at_kill += 1
                    cur = await killer.execute(_KILL, ([worker_name, appender_name],))
                    kills.append(Counter(name for name, ok in await cur.fetchall() if ok))
                    if len(kills) > 200:
                        break
            await appenders
            await wait_for(
                lambda: caught_up(app),
                TIMEOUT,
                lambda: f"the worker to finish\n{describe(workers)}",
            )
            assert worker.proc.returncode is None, describe(workers)
            status = await sigterm(worker)
            assert status == 0, describe(workers)
            docs = await app.documents("last", limit=10 * T_STREAMS)
            violations = await app.documents("violations", limit=10_000)
            held_rows = await app.store.held()
            log_rows = await read_log(app)
        finally:
            if appenders is not None and not appenders.done():
                appenders.cancel()
            await kill_all(workers)

    worker_kills = sum(k[worker_name] for k in kills)
    appender_kills = sum(k[appender_name] for k in kills)
    store_retries = sum("retrying" in r.getMessage() for r in caplog.records)
    worker_log = worker.log_text()
    worker_retries = worker_log.count("retrying")
    print(
        f"\n{len(kills)} rounds terminated {worker_kills} worker and {appender_kills} appender "
        f"connections ({behind_at_kill} rounds while the worker was behind); the worker logged "
        f"{worker_retries} retries, the patient appender's store {store_retries}; append errors "
        f"retried with the same ids: "
        + ", ".join(f"{w} {Counter(type(e).__name__ for e in es)}" for w, es in errors.items())
        + f" ({len(committed_anyway)} of them had committed)"
    )
    # The test did what it says: connections of both were terminated, while there was work, and
    # both the store's own retries and the caller's retries were exercised.
    assert sum(1 for k in kills if k[worker_name]) >= MIN_KILL_ROUNDS // 2, kills
    assert sum(1 for k in kills if k[appender_name]) >= MIN_KILL_ROUNDS // 2, kills
    assert behind_at_kill >= MIN_KILL_ROUNDS // 2, behind_at_kill
    assert worker_retries > 0, tail_of(worker_log)
    assert store_retries > 0
    assert errors["impatient"], "no append of the impatient store failed: nothing was retried"
    assert appends_done == T_STREAMS * T_ROUNDS
    # The errors are the store's own, saying what happened (a driver error would have failed the
    # append above).
    for err in errors["patient"] + errors["impatient"]:
        assert isinstance(err, StoreError) and "PostgreSQL" in str(err), repr(err)
    assert "worker task failed" not in worker_log, tail_of(worker_log)

    # --- the log: every message exactly once, in order per stream ----------------------------------
    ids = Counter(e.id for e in log_rows)
    duplicated = [i for i, c in ids.items() if c > 1]
    assert not duplicated, f"{len(duplicated)} message ids stored twice"
    all_ids = {i for stream_ids in expected.values() for i in stream_ids}
    assert set(ids) == all_ids, (len(set(ids) - all_ids), len(all_ids - set(ids)))
    by_stream: dict[str, list[Envelope]] = defaultdict(list)
    for e in log_rows:
        by_stream[e.stream].append(e)
    for stream, envs in by_stream.items():
        assert [e.stream_position for e in envs] == list(range(1, T_PER_STREAM + 1)), stream
        assert [e.id for e in envs] == expected[stream], f"{stream}: out of order"
        assert [msgspec.json.decode(e.data)["n"] for e in envs] == list(
            range(1, T_PER_STREAM + 1)
        ), stream
    assert [e.global_position for e in log_rows] == list(range(1, len(log_rows) + 1))
    assert held_rows == [], held_rows

    # --- the projection exactly once; the side effect at least once --------------------------------
    check_projection(docs, violations, T_STREAMS, T_PER_STREAM)
    assert set(docs[stream_name(0)]["by"]) == {str(worker.pid)}
    lines = effects_of(effects, worker.pid)
    seen = {e.message_id for e in lines}
    assert seen <= all_ids, "a side effect of a message that is not in the log"
    missing = all_ids - seen
    assert not missing, f"{len(missing)} messages never reached the side effect"
    print(f"{len(lines) - len(seen)} side effects redone")


def tail_of(text: str) -> str:
    return text[-3000:]


async def _owns_all(app: App, worker: WorkerProc) -> bool:
    if worker.proc.returncode is not None:
        raise AssertionError(f"the worker exited:\n{describe([worker])}")
    held = await owners(app)
    return all(c == Counter({worker.worker_id: PARTITIONS}) for c in held.values())
