"""tidings on PostgreSQL, side by side with eventsourcing, raw psycopg, pgqueuer and procrastinate.

Run by hand (not in CI), against a PostgreSQL server it may create a database on::

    .venv/bin/python benchmarks/postgres.py                  # 4 rounds, about 5 minutes
    .venv/bin/python benchmarks/postgres.py --quick          # 2 short rounds, about 1 minute
    .venv/bin/python benchmarks/postgres.py --only pair-1,raw-1 --rounds 9 --per-round
    .venv/bin/python benchmarks/postgres.py --profile td-1   # cProfile of one contender
    .venv/bin/python benchmarks/postgres.py --url postgresql://user@host:5432/db

``--url`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names the server and a database
to connect to. The benchmark creates a database of its own there (``tidings_bench_<pid>``), gives
every contender a fresh schema in it for every slot, drops each schema after its slot and the
database at the end. It touches nothing else.

To measure another checkout of tidings than the installed one, put its ``src`` first on
``PYTHONPATH``; the header names the source directory and the commit that were measured.

What is measured, all in one run on the same server:

* **appends** (rate slots, every contender on its own fresh schema):

  - ``td-*``: tidings ``App(store="postgresql://…?schema=…")``: ``await app.invoke(command)`` of a
    ``Decider`` command that reserves 1 or 10 seats of a new screening (so each command loads an
    empty new stream and appends 1 or 10 events to it at the version loaded): one caller invoking
    one command after the other, and 16 asyncio tasks doing the same concurrently.
    ``td-append-1000``: one ``app.append`` of 1,000 events to a new stream.
  - ``es-*``: the ``eventsourcing`` library's PostgreSQL module (``PERSISTENCE_MODULE=
    eventsourcing.postgres``, ``POSTGRES_*`` settings in the application's env, its default pool of
    5 + 10 overflow connections): an ``Application`` saving a new ``Aggregate`` holding 1 or 10
    events, sequentially and from 16 threads. Per save, eventsourcing 9.5 runs (``postgres.py``):
    in a pipeline, ``BEGIN``; ``SET LOCAL lock_timeout``; ``LOCK TABLE … IN EXCLUSIVE MODE``;
    ``NOTIFY``; ``INSERT … SELECT … FROM unnest(%s::stored_event[]) RETURNING notification_id``;
    sync; ``COMMIT``. The table lock serialises every save, so its threads commit one at a time.
  - ``raw-1``: raw psycopg (sync, one connection, autocommit): one ``INSERT`` of one row per
    transaction: one round trip and one WAL flush per row, nothing read first. Beside it, for
    reading the gap: ``raw-load`` does what a decider needs at least without server-side code,
    a ``SELECT`` of the (new, empty) stream (tidings' own ``read_forwards`` shape) and then the
    ``INSERT``: two round trips; ``raw-async`` is ``raw-1`` through psycopg's ``AsyncConnection``,
    the driver tidings uses. ``raw-copy``: one ``COPY … FROM STDIN`` (text format,
    ``copy.write_row``) of 1,000 rows inside ``BEGIN``/``COMMIT``. The table is tidings' own ``log`` table with its indexes (created from tidings' migration
    ``0001_log.sql`` at run time), and each row has the shape of a decided event: a new stream per
    transaction, a 36-character id, the command's id as correlation and causation, a 62-byte JSON
    payload, ``time.time()``.

  The rate is events (or rows) per second of wall clock over the slot (``--seconds`` per contender,
  after an untimed warm-up of 50 ms).

  Two comparisons whose targets are ratios are also measured **paired**: the two contenders take
  turns within one slot, each on its own fresh schema, in blocks of 20 ms (``pair-1``: tidings'
  1-event invoke against ``raw-1``) or 200 ms (``pair-16``: tidings' 16 callers against
  eventsourcing's 16 threads), until each has run ``--seconds``; both meet the same server weather.
  Their targets are judged on the median over rounds of the per-slot ratio.

* **sent commands** (``cmd-*``), one slot per round in which the three contenders take turns (the
  order rotating from round to round), each on a fresh schema, each given the same ``--commands``
  (default 5,000) no-op jobs. Timed from the first send to the moment the last outcome is recorded;
  connecting, installing schemas and registering handlers happen before the clock starts, and
  every check runs after it stops:

  - ``cmd-td``: ``app.send(DoIt(n=i))`` for all N (``asyncio.gather`` in chunks of 1,000 concurrent
    sends, which the store group-commits: at most 512 transactions per group), then one
    ``await app.worker().drain()`` (defaults: ``batch_size=500``; 8 partitions). The handler is
    ``async def do_it(cmd, ctx) -> None``. Outcomes are committed with the worker's checkpoints, so
    when ``drain()`` returns every outcome is recorded; checked afterwards: N ``succeeded`` rows in
    the ``outcomes`` table.
  - ``cmd-pgq``: pgqueuer over asyncpg (its documented driver): ``Queries(AsyncpgDriver(conn))
    .enqueue([…], [payload…], [0…])`` in chunks of 1,000 (one ``INSERT … SELECT unnest(…)`` per
    chunk), then ``PgQueuer(AsyncpgDriver(conn2)).qm.run(mode=QueueExecutionMode.drain)`` with its
    defaults (``batch_size=10``: one ``UPDATE … FOR UPDATE SKIP LOCKED … RETURNING`` dequeue per 10
    jobs; every job dispatched as an asyncio task; finished jobs deleted from the queue and logged
    in buffered batches). The entrypoint is ``async def noop(job) -> None``. ``drain`` returns when
    the queue is empty and every task and buffer is done; checked afterwards: N handler calls, an
    empty queue and N ``successful`` rows in ``pgqueuer_log``.
  - ``cmd-proc``: procrastinate over its ``PsycopgConnector``: ``noop.batch_defer_async(*kwargs)``
    in chunks of 1,000 (one insert per chunk), then ``app.run_worker_async(wait=False,
    install_signal_handlers=False)`` with its defaults (``concurrency=1``: one
    ``procrastinate_fetch_job`` call per job, then one ``procrastinate_finish_job`` per job). The
    task is ``async def noop(n) -> None``. ``wait=False`` returns once no job is left; checked
    afterwards: N handler calls and N ``succeeded`` jobs.

  The table also shows each contender's enqueue rate and its worker's rate (N / the time after
  the last enqueue returned).

* **latency** (``lat-*``): publish→handled at a steady ``--rate`` (default 1,000) events/s for
  ``--latency-seconds`` (default 5) after a 0.5 s warm-up, the worker (``app.worker().run()``)
  running in a SEPARATE process (this file, started with ``--latency-child``) on the same schema,
  so that what wakes it is the store's LISTEN/NOTIFY (``wait_for_change``), or its polling. The
  publisher is open-loop: every millisecond tick starts a task calling ``app.publish`` of one event
  to the next of 100 streams. Latency is the child's ``time.monotonic()`` in the handler minus the
  publisher's ``time.monotonic()`` when ``app.publish`` was called (one clock for both processes:
  Linux's CLOCK_MONOTONIC); ``checkpointed`` is when the child's commit of that batch's checkpoint
  returned (seen by wrapping ``app.store.commit`` on the instance: benchmark-side only). Two
  partial clocks split the latency: ``publisher's commit`` is when the publisher's ``await
  app.publish`` returned (its group commit, NOTIFY included), ``worker's read issued`` is when the
  child issued the ``read_all`` that returned the event (``app.store.read_all`` wrapped on the
  instance). The child also counts the NOTIFY wake-ups its listener received
  (``Listener._signal``, wrapped on the instance) and the events per read. ``lat-slow-*`` does the
  same at 20 events/s: with events 50 ms apart the worker's idle polling has backed off (5, 10,
  20, 40 ms…), so a p99 of a few ms there shows that the wake-up is the notification.

Rounds are interleaved: every round runs every slot once, the order rotating from round to round.
The table shows the median over rounds with the min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import pstats
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import asyncpg
import procrastinate
import psycopg
from eventsourcing.application import Application
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.domain.types import QueueExecutionMode
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import tidings
from bench_cinema import (  # the shared benchmark domain, beside this file
    SEATS,
    SeatReserved,
    cinema_app,
    es_new_screening,
    reserve,
)
from tidings import App, Command, Context, Event
from tidings.backends.postgres import _sql as tidings_sql

HERE = Path(__file__).resolve()
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

# --- the cinema domain, for tidings ------------------------------------------------------------


# --- messages of the command and latency slots -------------------------------------------------


class DoIt(Command):
    n: int


class Ticked(Event):
    seq: int
    sent: float


# --- the database: one of our own, a fresh schema per contender and slot -----------------------


@dataclass
class Database:
    """A database this run creates on the server of ``--url``, and drops at the end."""

    #: conninfo of the database named by --url (only used to create and drop ours)
    admin: str
    name: str
    params: dict[str, Any]
    _n: int = 0
    _conn: psycopg.Connection[Any] | None = None

    @classmethod
    def create(cls, url: str) -> Database:
        params = conninfo_to_dict(url)
        admin = make_conninfo(url)
        name = f"tidings_bench_{os.getpid()}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        db = cls(admin, name, params)
        db._conn = psycopg.connect(db.conninfo(), autocommit=True)
        return db

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None
        return self._conn

    def conninfo(self, **extra: Any) -> str:
        return make_conninfo(self.admin, dbname=self.name, **extra)

    def dsn(self) -> str:
        """A postgresql:// URL of our database (for asyncpg)."""
        p = self.params
        user = quote(p.get("user", "postgres"))
        password = f":{quote(p['password'])}" if p.get("password") else ""
        return f"postgresql://{user}{password}@{p.get('host', 'localhost')}:{p.get('port', 5432)}/{self.name}"

    def tidings_url(self, schema: str) -> str:
        return f"{self.dsn()}?schema={schema}"

    def schema(self, tag: str) -> str:
        """A fresh, empty schema."""
        self._n += 1
        name = f"{tag.replace('-', '_')}_{self._n}"
        self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        return name

    def checkpoint(self) -> bool:
        """Run ``CHECKPOINT`` (superuser or pg_checkpoint); False if not allowed."""
        try:
            self.conn.execute(b"CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            return False
        return True

    def drop_schema(self, name: str) -> None:
        self.conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))

    def scalar(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query.encode(), params).fetchone()  # type: ignore[call-overload]
        return None if row is None else row[0]

    @contextlib.contextmanager
    def fresh(self, tag: str) -> Iterator[str]:
        name = self.schema(tag)
        try:
            yield name
        finally:
            self.drop_schema(name)


DB: Database | None = None


def db() -> Database:
    assert DB is not None
    return DB


# --- measuring ---------------------------------------------------------------------------------

#: Runs for about ``seconds``; returns how many events, rows or jobs it did.
Burst = Callable[[float], Awaitable[int]]
#: Sets a contender up on a fresh schema and hands out its burst.
Opener = Callable[[str], contextlib.AbstractAsyncContextManager[Burst]]


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
    seconds: float
    commands: int
    latency_seconds: float
    rate: int
    slow_rate: int
    slow_seconds: float


#: Runs one slot; returns one value per series of the slot.
Run = Callable[[Config], Awaitable[list[float]]]


@dataclass
class Slot:
    series: list[Series]
    run: Run


CHECKS: list[str] = []
PROFILER: cProfile.Profile | None = None


def check(ok: bool, what: str) -> None:
    """Record a failed sanity check (shown under the table) instead of aborting the run."""
    if not ok:
        CHECKS.append(what)
        print(f"CHECK FAILED: {what}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


WARM = 0.05


async def timed(burst: Burst, seconds: float) -> tuple[int, float]:
    start = time.perf_counter()
    if PROFILER is not None:
        PROFILER.enable()
    try:
        count = await burst(seconds)
    finally:
        if PROFILER is not None:
            PROFILER.disable()
    return count, time.perf_counter() - start


def single(opener: Opener, tag: str) -> Run:
    """One contender alone for ``seconds``."""

    async def run(cfg: Config) -> list[float]:
        with db().fresh(tag) as schema:
            async with opener(schema) as burst:
                await burst(WARM)
                count, elapsed = await timed(burst, cfg.seconds)
        return [count / elapsed]

    return run


def paired(first: Opener, second: Opener, tag: str, block: float) -> Run:
    """Two contenders on two schemas taking turns in blocks of ``block`` seconds until each has run
    for ``seconds``: both meet the same server weather. Values: first, second, first/second."""

    async def run(cfg: Config) -> list[float]:
        with db().fresh(f"{tag}_a") as schema_a, db().fresh(f"{tag}_b") as schema_b:
            async with first(schema_a) as burst_a, second(schema_b) as burst_b:
                bursts = (burst_a, burst_b)
                counts, times = [0, 0], [0.0, 0.0]
                for burst in bursts:
                    await burst(WARM)
                while min(times) < cfg.seconds:
                    for i, burst in enumerate(bursts):
                        count, elapsed = await timed(burst, block)
                        counts[i] += count
                        times[i] += elapsed
        a, b = counts[0] / times[0], counts[1] / times[1]
        return [a, b, a / b]

    return run


def repeat(step: Callable[[], Awaitable[int]]) -> Burst:
    """One caller doing ``step`` over and over."""

    async def burst(seconds: float) -> int:
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            count += await step()
        return count

    return burst


def repeat_sync(step: Callable[[], int]) -> Burst:
    """One caller doing a blocking ``step`` over and over (the event loop waits meanwhile)."""

    async def burst(seconds: float) -> int:
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            count += step()
        return count

    return burst


# --- raw psycopg -------------------------------------------------------------------------------

COLUMNS = (
    "global_position, stream, stream_position, id, kind, type, version, data, correlation_id, "
    "causation_id, headers, recorded_at"
)
PAYLOAD = b'{"screening_id":"1234567","seat":"A1","customer":"customer-1"}'


def raw_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """tidings' own ``log`` table (its first migration), so that raw writes the same rows."""
    (_version, name, script) = tidings_sql.migrations(schema)[0]
    assert name == "0001_log.sql", name
    conn.execute(script)


def raw_rows(position: int, count: int) -> list[tuple[Any, ...]]:
    """``count`` rows of a new stream, starting after global position ``position``."""
    stream = f"screening-{position}"
    cause = f"{position:036d}"
    return [
        (
            position + n,
            stream,
            n,
            f"{position + n:036x}",
            "event",
            "SeatReserved",
            1,
            PAYLOAD,
            cause,
            cause,
            None,
            time.time(),
        )
        for n in range(1, count + 1)
    ]


def raw_insert() -> Opener:
    """One ``INSERT`` of one row per transaction (autocommit: one round trip per row)."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        with psycopg.connect(db().conninfo(), autocommit=True) as conn:
            raw_table(conn, schema)
            insert = sql.SQL("INSERT INTO {}.log (" + COLUMNS + ") VALUES (" + ", ".join(["%s"] * 12) + ")").format(sql.Identifier(schema))  # fmt: skip
            position = 0

            def step() -> int:
                nonlocal position
                (row,) = raw_rows(position, 1)
                position += 1
                conn.execute(insert, row, prepare=True)
                return 1

            yield repeat_sync(step)

    return open_


def raw_load_insert() -> Opener:
    """What a decider needs at least without server-side code: a ``SELECT`` of the (new, empty)
    stream, then one ``INSERT`` (autocommit): two round trips, one WAL flush per row."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        with psycopg.connect(db().conninfo(), autocommit=True) as conn:
            raw_table(conn, schema)
            insert = sql.SQL("INSERT INTO {}.log (" + COLUMNS + ") VALUES (" + ", ".join(["%s"] * 12) + ")").format(sql.Identifier(schema))  # fmt: skip
            load = sql.SQL("SELECT " + COLUMNS + " FROM {}.log WHERE stream = %s AND stream_position >= %s ORDER BY stream_position LIMIT %s").format(sql.Identifier(schema))  # fmt: skip
            position = 0

            def step() -> int:
                nonlocal position
                (row,) = raw_rows(position, 1)
                position += 1
                conn.execute(load, (row[1], 1, None), prepare=True).fetchall()
                conn.execute(insert, row, prepare=True)
                return 1

            yield repeat_sync(step)

    return open_


def raw_insert_async() -> Opener:
    """``raw_insert`` through psycopg's ``AsyncConnection`` (the driver tidings uses)."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        with psycopg.connect(db().conninfo(), autocommit=True) as setup:
            raw_table(setup, schema)
        async with await psycopg.AsyncConnection.connect(db().conninfo(), autocommit=True) as conn:
            insert = sql.SQL("INSERT INTO {}.log (" + COLUMNS + ") VALUES (" + ", ".join(["%s"] * 12) + ")").format(sql.Identifier(schema))  # fmt: skip
            position = 0

            async def step() -> int:
                nonlocal position
                (row,) = raw_rows(position, 1)
                position += 1
                await conn.execute(insert, row, prepare=True)
                return 1

            yield repeat(step)

    return open_


def raw_copy(rows: int) -> Opener:
    """``BEGIN``; ``COPY … FROM STDIN`` of ``rows`` rows of one new stream; ``COMMIT``."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        with psycopg.connect(db().conninfo(), autocommit=True) as conn:
            raw_table(conn, schema)
            copy_sql = sql.SQL("COPY {}.log (" + COLUMNS + ") FROM STDIN").format(sql.Identifier(schema))  # fmt: skip
            position = 0

            def step() -> int:
                nonlocal position
                batch = raw_rows(position, rows)
                position += rows
                with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    for row in batch:
                        copy.write_row(row)
                return rows

            yield repeat_sync(step)

    return open_


# --- tidings appends ---------------------------------------------------------------------------

_ids = iter(range(1 << 62))


@contextlib.asynccontextmanager
async def opened_cinema(schema: str) -> AsyncIterator[App]:
    app = cinema_app(db().tidings_url(schema))
    async with app:
        await app.invoke(reserve(f"warm-{next(_ids)}", 1))
        yield app


def tidings_invoke(seats: int) -> Opener:
    """One caller: ``await app.invoke(...)`` of a command reserving ``seats`` seats of a new
    screening."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        async with opened_cinema(schema) as app:

            async def invoke() -> int:
                await app.invoke(reserve(str(next(_ids)), seats))
                return seats

            yield repeat(invoke)

    return open_


def tidings_concurrent(seats: int, callers: int) -> Opener:
    """``callers`` asyncio tasks, each invoking its own commands one after the other."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        async with opened_cinema(schema) as app:

            async def burst(seconds: float) -> int:
                deadline = time.perf_counter() + seconds

                async def caller() -> int:
                    done = 0
                    while time.perf_counter() < deadline:
                        await app.invoke(reserve(str(next(_ids)), seats))
                        done += seats
                    return done

                return sum(await asyncio.gather(*(caller() for _ in range(callers))))

            yield burst

    return open_


def tidings_append(size: int) -> Opener:
    """One ``app.append`` of ``size`` events to a new stream."""
    events = [
        SeatReserved(screening_id="batch", seat=SEATS[i % len(SEATS)], customer="customer-1")
        for i in range(size)
    ]

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        async with opened_cinema(schema) as app:

            async def append() -> int:
                await app.append(f"batch-{next(_ids)}", events)
                return size

            yield repeat(append)

    return open_


# --- eventsourcing -----------------------------------------------------------------------------


@contextlib.contextmanager
def es_application(schema: str) -> Iterator[Application[UUID]]:
    p = db().params
    app: Application[UUID] = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": db().name,
            "POSTGRES_HOST": str(p.get("host", "localhost")),
            "POSTGRES_PORT": str(p.get("port", 5432)),
            "POSTGRES_USER": str(p.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(p.get("password", "")),
            "POSTGRES_SCHEMA": schema,
        }
    )
    try:
        app.save(es_new_screening(1))
        yield app
    finally:
        app.close()


def eventsourcing_save(seats: int) -> Opener:
    """One ``app.save`` of a new aggregate holding ``seats`` events."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        with es_application(schema) as app:

            def save() -> int:
                app.save(es_new_screening(seats))
                return seats

            yield repeat_sync(save)

    return open_


def eventsourcing_threads(seats: int, threads: int) -> Opener:
    """``threads`` threads, each saving new aggregates one after the other."""

    @contextlib.asynccontextmanager
    async def open_(schema: str) -> AsyncIterator[Burst]:
        with es_application(schema) as app:

            async def burst(seconds: float) -> int:
                deadline = time.perf_counter() + seconds
                counts = [0] * threads

                def worker(index: int) -> None:
                    done = 0
                    while time.perf_counter() < deadline:
                        app.save(es_new_screening(seats))
                        done += seats
                    counts[index] = done

                pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
                for thread in pool:
                    thread.start()
                for thread in pool:
                    thread.join()
                return sum(counts)

            yield burst

    return open_


# --- sent commands: tidings, pgqueuer, procrastinate -------------------------------------------

CHUNK = 1000


@dataclass
class Phases:
    """A command run's clock: enqueue, then work."""

    sent: float = 0.0
    worked: float = 0.0

    @property
    def total(self) -> float:
        return self.sent + self.worked


async def cmd_tidings(n: int) -> Phases:
    with db().fresh("cmd_td") as schema:
        app = App("commands", store=db().tidings_url(schema))

        @app.command
        async def do_it(cmd: DoIt, ctx: Context) -> None:
            return None

        phases = Phases()
        async with app:
            worker = app.worker()
            start = time.perf_counter()
            if PROFILER is not None:
                PROFILER.enable()
            tickets: list[Any] = []
            for first in range(0, n, CHUNK):
                tickets += await asyncio.gather(
                    *(app.send(DoIt(n=i)) for i in range(first, min(n, first + CHUNK)))
                )
            sent = time.perf_counter()
            await worker.drain()
            done = time.perf_counter()
            if PROFILER is not None:
                PROFILER.disable()
            phases = Phases(sent - start, done - sent)
            ok = db().scalar(f"SELECT count(*) FROM {schema}.outcomes WHERE status = 'succeeded'")
            last = await app.outcome(tickets[-1].message_id)
            check(
                ok == n and last.status == "succeeded",
                f"cmd-td: {ok} of {n} outcomes succeeded (last: {last.status})",
            )
        return phases


async def cmd_pgqueuer(n: int) -> Phases:
    with db().fresh("cmd_pgq") as schema:
        settings = {"search_path": schema}
        setup = await asyncpg.connect(db().dsn(), server_settings=settings)
        producer = await asyncpg.connect(db().dsn(), server_settings=settings)
        consumer = await asyncpg.connect(db().dsn(), server_settings=settings)
        try:
            await Queries(AsyncpgDriver(setup)).install()
            queries = Queries(AsyncpgDriver(producer))
            pgq = PgQueuer(AsyncpgDriver(consumer))
            handled = 0

            @pgq.entrypoint("noop")
            async def noop(job: Job) -> None:
                nonlocal handled
                handled += 1

            start = time.perf_counter()
            for first in range(0, n, CHUNK):
                k = min(n, first + CHUNK) - first
                await queries.enqueue(
                    ["noop"] * k,
                    [f'{{"n":{i}}}'.encode() for i in range(first, first + k)],
                    [0] * k,
                )
            sent = time.perf_counter()
            await pgq.qm.run(mode=QueueExecutionMode.drain)
            done = time.perf_counter()
            left = await setup.fetchval("SELECT count(*) FROM pgqueuer")
            logged = await setup.fetchval(
                "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
            )
            check(
                handled == n and left == 0 and logged == n,
                f"cmd-pgq: {handled} of {n} handled, {left} left in the queue, {logged} logged",
            )
        finally:
            for conn in (setup, producer, consumer):
                await conn.close()
        return Phases(sent - start, done - sent)


async def cmd_procrastinate(n: int) -> Phases:
    with db().fresh("cmd_proc") as schema:
        connector = procrastinate.PsycopgConnector(
            conninfo=db().conninfo(), kwargs={"options": f"-c search_path={schema}"}
        )
        app = procrastinate.App(connector=connector)
        handled = 0

        @app.task(name="noop")
        async def noop(n: int) -> None:
            nonlocal handled
            handled += 1

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            start = time.perf_counter()
            for first in range(0, n, CHUNK):
                await noop.batch_defer_async(*({"n": i} for i in range(first, min(n, first + CHUNK))))  # fmt: skip
            sent = time.perf_counter()
            await app.run_worker_async(wait=False, install_signal_handlers=False)
            done = time.perf_counter()
        ok = db().scalar(
            f"SELECT count(*) FROM {schema}.procrastinate_jobs WHERE status = 'succeeded'"
        )
        check(handled == n and ok == n, f"cmd-proc: {handled} of {n} handled, {ok} succeeded")
        return Phases(sent - start, done - sent)


CMD_CONTENDERS: dict[str, Callable[[int], Awaitable[Phases]]] = {
    "td": cmd_tidings,
    "pgq": cmd_pgqueuer,
    "proc": cmd_procrastinate,
}
_cmd_rounds = iter(range(1 << 30))


def commands_slot(which: list[str]) -> Run:
    """The contenders take turns within the slot, the order rotating from slot to slot."""

    async def run(cfg: Config) -> list[float]:
        shift = next(_cmd_rounds) % len(which)
        results: dict[str, Phases] = {}
        for name in which[shift:] + which[:shift]:
            results[name] = await CMD_CONTENDERS[name](cfg.commands)
        n = cfg.commands
        values = []
        for name in which:
            p = results[name]
            values += [n / p.total, n / p.sent, n / p.worked]
        if "td" in results and "pgq" in results:
            values.append(results["pgq"].total / results["td"].total)
        return values

    return run


# --- latency: the worker in another process ----------------------------------------------------

WARMUP = 0.5
STREAMS = 100
LAT_SUB = "lat"


async def latency_child(url: str, total: int) -> None:
    """The worker process: deliver ``total`` Ticked events, then print what it saw as JSON."""
    app = App("latency", store=url)
    handled: dict[int, float] = {}
    sent: dict[int, float] = {}
    checkpointed: dict[int, float] = {}
    unconfirmed: list[int] = []
    notes = 0
    everything = asyncio.Event()
    #: when each read of the log that returned events was issued; per event, its read's
    read_at: dict[int, float] = {}
    reads: list[float] = [0.0]

    @app.subscriber(LAT_SUB)
    async def on_ticked(e: Ticked, ctx: Context) -> None:
        handled[e.seq] = time.monotonic()
        read_at[e.seq] = reads[-1]
        sent[e.seq] = e.sent
        unconfirmed.append(e.seq)

    async with app:
        store: Any = app.store
        commit = store.commit

        async def stamped(tx: Any) -> Any:
            result = await commit(tx)
            if any(c.subscription == LAT_SUB for c in tx.checkpoints):
                now = time.monotonic()
                for seq in unconfirmed:
                    checkpointed[seq] = now
                unconfirmed.clear()
                if len(checkpointed) >= total:
                    everything.set()
            return result

        store.commit = stamped
        listener = store._listener
        signal = listener._signal

        def counted() -> None:
            nonlocal notes
            notes += 1
            signal()

        listener._signal = counted
        read_all = store.read_all

        async def stamped_read(*args: Any, **kwargs: Any) -> Any:
            issued = time.monotonic()
            envs = await read_all(*args, **kwargs)
            if envs:
                reads.append(issued)
            return envs

        store.read_all = stamped_read
        worker = app.worker()
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = await store.partitions(LAT_SUB)
            if parts and all(p.owner == worker.id for p in parts) and listener._task is not None:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the LISTEN connection is up (its first signal counted)
        ready_notes = notes
        ready_reads = len(reads)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), timeout=120)
        worker.stop()
        await task
    print(
        json.dumps(
            {
                "handled": {s: handled[s] - sent[s] for s in handled},
                "checkpointed": {s: checkpointed[s] - sent[s] for s in checkpointed},
                "read": {s: read_at[s] - sent[s] for s in read_at},
                "notes": notes - ready_notes,
                "reads": len(reads) - ready_reads,
            }
        ),
        flush=True,
    )


def latency_slot(rate_of: Callable[[Config], int], seconds_of: Callable[[Config], float]) -> Run:
    async def run(cfg: Config) -> list[float]:
        rate, seconds = rate_of(cfg), seconds_of(cfg)
        warm = int(WARMUP * rate)
        total = warm + int(seconds * rate)
        # The WAL the earlier slots wrote (COPY, batches) makes a checkpoint due about every
        # minute, and on this VM's disk a checkpoint's writes stall every commit for 100-300 ms:
        # one landing in this window measures the checkpoint, not the wake-up. Start each
        # latency window right after one instead (RESULTS.md reports what a stall does).
        db().checkpoint()
        with db().fresh("lat") as schema:
            url = db().tidings_url(schema)
            app = App("latency", store=url)
            async with app:  # migrates the schema before the child opens it
                child = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HERE),
                    "--latency-child",
                    url,
                    str(total),
                    stdout=asyncio.subprocess.PIPE,
                )
                assert child.stdout is not None
                try:
                    line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
                    if line.strip() != b"ready":
                        raise RuntimeError(f"latency child said {line!r}")
                    pending: set[asyncio.Task[Any]] = set()
                    publish_started: list[float] = []
                    committed: dict[int, float] = {}

                    async def publish(seq: int) -> None:
                        sent = time.monotonic()
                        await app.publish(Ticked(seq=seq, sent=sent), stream=f"lat-{seq % STREAMS}")
                        committed[seq] = time.monotonic() - sent

                    start = time.monotonic()
                    seq = 0
                    while seq < total:
                        now = time.monotonic()
                        due = start + seq / rate
                        if now < due:
                            await asyncio.sleep(due - now)
                            continue
                        while seq < total and start + seq / rate <= now:
                            t = asyncio.create_task(publish(seq))
                            pending.add(t)
                            t.add_done_callback(pending.discard)
                            publish_started.append(now)
                            seq += 1
                    published = time.monotonic()
                    if pending:
                        await asyncio.gather(*pending)
                    out, _ = await asyncio.wait_for(child.communicate(), timeout=150)
                finally:
                    if child.returncode is None:
                        child.kill()
                        await child.wait()
        found = json.loads(out.decode().strip().splitlines()[-1])
        handled = {int(k): v for k, v in found["handled"].items()}
        checkpointed = {int(k): v for k, v in found["checkpointed"].items()}
        measured = range(warm, total)
        done = [s for s in measured if s in checkpointed and s in handled]
        check(
            len(done) == len(measured),
            f"latency at {rate}/s: {len(done)} of {len(measured)} handled and checkpointed",
        )
        ms = 1000.0
        to_handled = [handled[s] * ms for s in done]
        to_checkpoint = [checkpointed[s] * ms for s in done]
        to_commit = [committed[s] * ms for s in done]
        to_read = [float(found["read"][str(s)]) * ms for s in done]
        achieved = (total - warm) / (published - publish_started[warm]) if total > warm else 0.0
        return [
            percentile(to_handled, 50),
            percentile(to_handled, 99),
            max(to_handled),
            percentile(to_checkpoint, 50),
            percentile(to_checkpoint, 99),
            percentile(to_commit, 50),
            percentile(to_commit, 99),
            percentile(to_read, 50),
            percentile(to_read, 99),
            achieved,
            found["notes"] / (published - start),
            len(done) / max(1, found["reads"]),
        ]

    return run


# --- the slots and the targets -----------------------------------------------------------------

ONE = "one caller, a new stream per command or save (events/s; raw: rows/s)"
MANY = "16 concurrent callers (asyncio tasks; threads for eventsourcing)"
BATCH = "1,000 rows or events in one transaction"
PAIRED = "paired: two contenders taking turns within one slot"
COMMANDS = "sent commands, N no-op jobs, one worker, first send to last outcome (jobs/s)"
LATENCY = "publish->handled latency, worker in a separate process (LISTEN/NOTIFY)"


def slots(cfg: Config) -> list[Slot]:
    out: list[Slot] = []

    def one(section: str, key: str, label: str, unit: str, opener: Opener) -> None:
        out.append(Slot([Series(key, label, unit, section)], single(opener, key)))

    def pair(key: str, a: tuple[str, Opener], b: tuple[str, Opener], block: float) -> None:
        series = [
            Series(f"{key}-a", a[0], "events/s", PAIRED),
            Series(f"{key}-b", b[0], "events/s", PAIRED),
            Series(f"{key}-ratio", f"  ratio ({key}, median of slots)", "x", PAIRED),
        ]
        out.append(Slot(series, paired(a[1], b[1], key, block)))

    # fmt: off
    one(ONE,   "raw-1",    "raw psycopg, 1 row/tx (INSERT)",    "rows/s",   raw_insert())
    one(ONE,   "raw-load", "raw psycopg, SELECT + INSERT/row",  "rows/s",   raw_load_insert())
    one(ONE,   "raw-async", "raw psycopg async, 1 row/tx",      "rows/s",   raw_insert_async())
    one(ONE,   "td-1",     "tidings invoke, 1 event",           "events/s", tidings_invoke(1))
    one(ONE,   "td-10",    "tidings invoke, 10 events",         "events/s", tidings_invoke(10))
    one(ONE,   "es-1",     "eventsourcing save, 1 event",       "events/s", eventsourcing_save(1))
    one(ONE,   "es-10",    "eventsourcing save, 10 events",     "events/s", eventsourcing_save(10))
    one(MANY,  "td16-1",   "tidings 16 callers, 1 event",       "events/s", tidings_concurrent(1, 16))
    one(MANY,  "td16-10",  "tidings 16 callers, 10 events",     "events/s", tidings_concurrent(10, 16))
    one(MANY,  "es16-1",   "eventsourcing 16 threads, 1 event", "events/s", eventsourcing_threads(1, 16))
    one(MANY,  "es16-10",  "eventsourcing 16 threads, 10 ev.",  "events/s", eventsourcing_threads(10, 16))
    one(BATCH, "raw-copy", "raw psycopg, COPY 1,000 rows/tx",   "rows/s",   raw_copy(1000))
    one(BATCH, "td-append-1000", "tidings app.append 1,000",    "events/s", tidings_append(1000))
    pair("pair-1",  ("tidings invoke, 1 event",     tidings_invoke(1)),
                    ("raw psycopg, 1 row/tx",       raw_insert()), 0.02)
    pair("pair-16", ("tidings 16 callers, 1 event", tidings_concurrent(1, 16)),
                    ("eventsourcing 16 threads, 1", eventsourcing_threads(1, 16)), 0.2)
    which = list(CMD_CONTENDERS)
    cmd_series = []
    names = {"td": "tidings send + drain", "pgq": "pgqueuer enqueue + drain", "proc": "procrastinate defer + worker"}
    for name in which:
        cmd_series += [
            Series(f"cmd-{name}", names[name], "jobs/s", COMMANDS),
            Series(f"cmd-{name}-send", f"  {name}: enqueue phase alone", "jobs/s", COMMANDS),
            Series(f"cmd-{name}-work", f"  {name}: worker phase alone", "jobs/s", COMMANDS),
        ]
    cmd_series.append(Series("cmd-ratio", "  tidings / pgqueuer (same slot)", "x", COMMANDS))
    out.append(Slot(cmd_series, commands_slot(which)))
    for key, rate_of, seconds_of, what in (
        ("lat", lambda c: c.rate, lambda c: c.latency_seconds, f"{cfg.rate:,}/s"),
        ("lat-slow", lambda c: c.slow_rate, lambda c: c.slow_seconds, f"{cfg.slow_rate}/s"),
    ):
        series = [
            Series(f"{key}-p50",  f"publish->handled p50, {what}",      "ms", LATENCY, False),
            Series(f"{key}-p99",  f"publish->handled p99, {what}",      "ms", LATENCY, False),
            Series(f"{key}-max",  f"publish->handled max, {what}",      "ms", LATENCY, False),
            Series(f"{key}-ck50", f"publish->checkpointed p50, {what}", "ms", LATENCY, False),
            Series(f"{key}-ck99", f"publish->checkpointed p99, {what}", "ms", LATENCY, False),
            Series(f"{key}-commit50", f"  publish->publisher's commit p50, {what}", "ms", LATENCY, False),
            Series(f"{key}-commit99", f"  publish->publisher's commit p99, {what}", "ms", LATENCY, False),
            Series(f"{key}-read50", f"  publish->worker's read issued p50, {what}", "ms", LATENCY, False),
            Series(f"{key}-read99", f"  publish->worker's read issued p99, {what}", "ms", LATENCY, False),
            Series(f"{key}-rate", f"publish rate achieved, {what}",     "events/s", LATENCY),
            Series(f"{key}-notes", f"NOTIFY wake-ups in the worker, {what}", "/s", LATENCY),
            Series(f"{key}-batch", f"events per worker read, {what}", "x", LATENCY),
        ]
        out.append(Slot(series, latency_slot(rate_of, seconds_of)))
    # fmt: on
    return out


@dataclass(frozen=True)
class Target:
    label: str
    numerator: str
    #: a series key, or a number to compare the numerator with
    denominator: str | float
    #: "min": value/denominator >= bound; "max": <= bound
    sense: str
    bound: float
    primary: bool = True


# fmt: off
TARGETS = [
    Target("1 caller, 1-event invoke / raw 1 row/tx (paired) >= 0.8",   "pair-1-ratio",  1.0,        "min", 0.8),
    Target("16 callers, 1 event / eventsourcing 16 threads (paired) >= 10", "pair-16-ratio", 1.0,    "min", 10.0),
    Target("sent commands: tidings / pgqueuer jobs/s (same slot) >= 2", "cmd-ratio",     1.0,        "min", 2.0),
    Target("p99 publish->handled < 20 ms at 1,000/s, separate process", "lat-p99",       20.0,       "max", 1.0),
    Target("1 caller, 1 event / raw 1 row/tx (slots)",                  "td-1",          "raw-1",    "min", 0.8, False),
    Target("1 caller, 1 event / raw SELECT + INSERT per row (slots)",   "td-1",          "raw-load", "min", 0.8, False),
    Target("raw async / raw sync, 1 row/tx (the driver alone)",         "raw-async",     "raw-1",    "min", 0.8, False),
    Target("16 callers, 1 event / eventsourcing 16 threads (slots)",    "td16-1",        "es16-1",   "min", 10.0, False),
    Target("16 callers, 10 events / eventsourcing 16 threads, 10",      "td16-10",       "es16-10",  "min", 10.0, False),
    Target("16 callers, 1 event / eventsourcing sequential",            "td16-1",        "es-1",     "min", 10.0, False),
    Target("sent commands: tidings / pgqueuer (medians)",               "cmd-td",        "cmd-pgq",  "min", 2.0, False),
    Target("sent commands: tidings / procrastinate (medians)",          "cmd-td",        "cmd-proc", "min", 2.0, False),
    Target("p99 publish->handled < 20 ms at 20/s, separate process",    "lat-slow-p99",  20.0,       "max", 1.0, False),
]
# fmt: on


# --- the machine -------------------------------------------------------------------------------


def _first(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "?"


def filesystem_of(path: str) -> str:
    best, found = "", "?"
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            device, mount, fstype, options, *_ = line.split()
            if path.startswith(mount) and len(mount) > len(best):
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


def server(database: Database) -> list[str]:
    conn = database.conn
    settings = {}
    for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                 "full_page_writes", "commit_delay", "shared_buffers", "max_connections",
                 "data_directory"):  # fmt: skip
        try:
            settings[name] = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]  # type: ignore[index]  # fmt: skip
        except psycopg.Error:
            conn.rollback()
            settings[name] = "?"
    data = settings["data_directory"]
    local = Path(data).exists()
    p = database.params
    return [
        f"postgresql  {settings['server_version']} at {p.get('host', 'localhost')}:{p.get('port', 5432)}, "
        f"database {database.name} (created for this run), "
        f"fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']}, "
        f"wal_sync_method={settings['wal_sync_method']}, full_page_writes={settings['full_page_writes']}, "
        f"commit_delay={settings['commit_delay']}, shared_buffers={settings['shared_buffers']}, "
        f"max_connections={settings['max_connections']}",
        f"pg data     {data} — {filesystem_of(data) if local else 'not on this machine'}",
    ]


def versions() -> str:
    names = ["msgspec", "psycopg", "psycopg-binary", "psycopg-pool", "eventsourcing", "pgqueuer",
             "asyncpg", "procrastinate"]  # fmt: skip
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return (
        f"python {platform.python_version()}, libpq {psycopg.pq.version()}, "
        + ", ".join(found)
        + f", tidings {importlib.metadata.version('tidings')} at {git_sha()}"
    )


def machine(database: Database) -> list[str]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?"
    return [
        f"date        {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"command     {command_line()}",
        f"machine     {os.cpu_count()} CPUs ({_first('/proc/cpuinfo', 'model name')}), RAM {ram}, "
        f"kernel {platform.release()}",
        *server(database),
        f"versions    {versions()}",
        f"source      {Path(tidings.__file__).resolve().parent}",
        f"load        {load()} (1, 5, 15 min) before the run",
    ]


# --- running and reporting ---------------------------------------------------------------------


async def run_all(chosen: list[Slot], args: argparse.Namespace, cfg: Config) -> None:
    for round_no in range(args.rounds):
        shift = round_no % len(chosen)
        started = time.perf_counter()
        for slot in chosen[shift:] + chosen[:shift]:
            values = await slot.run(cfg)
            for series, value in zip(slot.series, values, strict=True):
                series.values.append(value)
        print(
            f"round {round_no + 1}/{args.rounds} done in {time.perf_counter() - started:.1f}s; "
            f"load {load()}",
            file=sys.stderr,
            flush=True,
        )


def fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:,.1f}" if unit in ("ms", "/s") else f"{value:,.0f}"


def report(chosen: list[Slot], per_round: bool) -> list[str]:
    every = [series for slot in chosen for series in slot.series]
    by_key = {series.key: series for series in every}
    head = f"{'contender':<44} {'unit':>8} {'median':>10} {'min':>10} {'max':>10}  key"
    lines = [head, "-" * (len(head) + 12)]
    section = ""
    for s in every:
        if s.section != section:
            section = s.section
            lines.append(f"[{section}]")
        lines.append(
            f"{s.label:<44} {s.unit:>8} {fmt(s.median(), s.unit):>10} "
            f"{fmt(min(s.values), s.unit):>10} {fmt(max(s.values), s.unit):>10}  {s.key}"
        )
    if per_round:
        lines += ["", "per round (rounds in order; the order of slots within a round rotates):"]
        for s in every:
            lines.append(f"  {s.key:<16} {'  '.join(fmt(v, s.unit) for v in s.values)}")
    lines += [
        "",
        "targets: ratio of the medians (value / target, or value / yardstick; a paired ratio is",
        "the median of the per-slot ratios); beside it the ratio of the best rounds, and",
        "[the lowest-highest ratio within one round]",
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
        else:
            met, want = ratio <= t.bound, f"<= {t.bound:g}x"
        verdict = (
            ("MET" if met else "MISSED") if t.primary else ("(info) ok" if met else "(info) no")
        )
        lines.append(
            f"{t.label:<64} {ratio:6.2f}x  best {best:5.2f}x  [{min(ratios):.2f}-{max(ratios):.2f}]"
            f"  want {want:<8} {verdict}"
        )
    if CHECKS:
        lines += [
            "",
            "FAILED CHECKS (the numbers above may be wrong):",
            *(f"  {c}" for c in CHECKS),
        ]
    return lines


def _short(file: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _package(where: str) -> str:
    if where.startswith("~"):
        return "built-ins (epoll, sockets, re, ...)"
    if where.startswith(".") and "/asyncio/" in where:  # lib/python3.X/asyncio/...
        return "asyncio"
    if where.startswith((".", "<frozen")):
        return "Python's standard library (selectors, ...)"
    if where.startswith("/") or "/" not in where:
        return "other (this benchmark, <string>, ...)"
    return where.split("/", 1)[0]


async def profile(key: str, cfg: Config, top: int) -> list[str]:
    """cProfile around the timed region of one contender (after an unprofiled run): CPU of this
    process per event or job, beside the wall clock."""
    global PROFILER
    single_slots = {s.series[0].key: s for s in slots(cfg) if len(s.series) == 1}
    if key in single_slots:
        run = single_slots[key].run
        unit_count = None
    elif key == "cmd-td":

        async def run(c: Config) -> list[float]:
            p = await cmd_tidings(c.commands)
            return [c.commands / p.total]

        unit_count = cfg.commands
    else:
        raise SystemExit(f"--profile takes one of {', '.join(single_slots)}, cmd-td")
    await run(cfg)  # warm: imports, first-use caches, the server's
    PROFILER = cProfile.Profile()
    cpu = time.process_time()
    wall = time.perf_counter()
    values = await run(cfg)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    profiler, PROFILER = PROFILER, None
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rate = values[0]
    count = unit_count if unit_count is not None else int(rate * cfg.seconds)
    out = [
        f"profile of {key}: {rate:,.0f}/s under the profiler; about {count:,} events or jobs",
        f"this process's CPU over the whole slot {cpu:.3f}s of {wall:.3f}s wall (setup included); "
        f"profiled time {total:.3f}s = {total / count * 1e6:.1f} µs per event or job",
        "",
        f"{'tottime µs/op':>13} {'cum µs/op':>10} {'calls/op':>9}  function",
    ]
    rows = []
    for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{_short(file)}:{line}({name})"))
    for tt, ct, nc, where in sorted(rows, reverse=True)[:top]:
        out.append(f"{tt / count * 1e6:13.2f} {ct / count * 1e6:10.2f} {nc / count:9.2f}  {where}")
    groups: dict[str, float] = {}
    for tt, _ct, _nc, where in rows:
        groups[_package(where)] = groups.get(_package(where), 0.0) + tt
    out += ["", "tottime by package (µs per event or job, share of the profiled time):"]
    for name, tt in sorted(groups.items(), key=lambda g: g[1], reverse=True):
        out.append(f"{tt / count * 1e6:13.2f}  {tt / total:6.1%}  {name}")
    out += ["", "by cumulative time (tidings only):"]
    mine = [r for r in rows if "tidings" in r[3]]
    for tt, ct, nc, where in sorted(mine, key=lambda r: r[1], reverse=True)[:top]:
        out.append(f"{tt / count * 1e6:13.2f} {ct / count * 1e6:10.2f} {nc / count:9.2f}  {where}")
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--latency-child":
        asyncio.run(latency_child(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--seconds", type=float, default=0.8, help="per contender in a rate slot")
    parser.add_argument("--commands", type=int, default=5_000, help="jobs per command contender")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="measured window")
    parser.add_argument("--rate", type=int, default=1_000, help="events/s in the latency slot")
    parser.add_argument("--quick", action="store_true", help="2 rounds, shorter slots")
    parser.add_argument("--per-round", action="store_true", help="also list every round's value")
    parser.add_argument("--only", default="", help="comma-separated key prefixes (keys: table)")
    parser.add_argument("--profile", default="", help="cProfile one contender, e.g. td-1, cmd-td")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.commands, args.latency_seconds = 2, 0.4, 2_000, 2.0
    cfg = Config(
        seconds=args.seconds,
        commands=args.commands,
        latency_seconds=args.latency_seconds,
        rate=args.rate,
        slow_rate=20,
        slow_seconds=2.0 if not args.quick else 1.0,
    )
    chosen = slots(cfg)
    if args.only:
        prefixes = tuple(p.strip() for p in args.only.split(",") if p.strip())
        chosen = [s for s in chosen if any(x.key.startswith(prefixes) for x in s.series)]
    for name in ("pgqueuer", "procrastinate", "eventsourcing", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    global DB
    DB = Database.create(args.url)
    try:
        print("\n".join(machine(DB)), flush=True)
        if args.profile:
            print("\n".join(asyncio.run(profile(args.profile, cfg, args.top))))
            return
        print(
            f"plan        {len(chosen)} slots x {args.rounds} rounds, rate slots {cfg.seconds:g}s per "
            f"contender, {cfg.commands:,} jobs per command contender, latency {cfg.latency_seconds:g}s "
            f"at {cfg.rate:,}/s and {cfg.slow_seconds:g}s at {cfg.slow_rate}/s, fresh schemas per slot",
            flush=True,
        )
        started = time.perf_counter()
        asyncio.run(run_all(chosen, args, cfg))
        print(
            f"took        {time.perf_counter() - started:.0f}s; load {load()} after the run\n",
            flush=True,
        )
    finally:
        DB.drop()
    print("\n".join(report(chosen, args.per_round)))


if __name__ == "__main__":
    main()
