"""tidings on PostgreSQL, paired with raw psycopg, eventsourcing, pgqueuer and procrastinate.

Run by hand (not in CI), against a server it may create a database on::

    python benchmarks/postgres.py                 # 5 rounds, about 2 minutes
    python benchmarks/postgres.py --quick         # 2 short rounds, under a minute
    python benchmarks/postgres.py --only seq --rounds 9 --url postgresql://user@host:5432/db

The run creates a database (``tidings_bench_<pid>``) on the server of ``--url``, gives every
contender a fresh schema in it for every slot, and drops it at the end. Slots (see ``_pairs.py``):

* ``seq``: one caller, ``app.invoke`` of a 1-event ``Decider`` command on a new stream, against
  raw psycopg (sync, autocommit, prepared) inserting the same row into tidings' own ``log``
  table (its migrations, bound to the schema): one round trip and one WAL flush per row.
* ``ideal`` (a yardstick): async psycopg running tidings' own one-message append statement,
  against the same raw psycopg: what any asyncio caller of psycopg pays for tidings' ordering
  (the log's head, the stream's version) before tidings' own layers.
* ``many``: 16 asyncio tasks invoking 1-event commands, against eventsourcing's PostgreSQL
  ``Application`` saving a new 1-event aggregate from 16 threads (its default pool).
* ``cmd-pgq``, ``cmd-proc`` (one-shot trials): ``--commands`` no-op sent commands, from the
  first send to the last outcome. tidings: ``app.send`` in chunks of 1,000 concurrent sends,
  then ``worker.drain()``; pgqueuer (asyncpg): ``enqueue`` in chunks of 1,000, then
  ``qm.run(mode=drain)``; procrastinate: ``batch_defer_async`` likewise, then
  ``run_worker_async(wait=False)``; each with its defaults.
* ``latency``: publish→handled at a steady 1,000 events/s for ``--latency-seconds`` after a
  0.5 s warm-up, the worker in another process (this file with ``--latency-child``), woken by
  the store's LISTEN/NOTIFY. The publisher is open-loop (each tick starts a task calling
  ``app.publish``); latency is the child's handler clock minus the moment ``app.publish`` was
  called (``time.monotonic()``, one clock for both processes on Linux). Also shown: the
  publisher's own commit, where a slow server disk shows first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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

from _pairs import (
    Contender,
    Floor,
    Pair,
    Sample,
    Single,
    Slot,
    Turn,
    check,
    concurrently,
    header,
    in_threads,
    main,
    one_shot,
    parser,
    percentile,
    repeat,
)
from bench_cinema import cinema_app, es_saving, reserve
from tidings import App, Command, Context, Event
from tidings.backends._sql import migrations
from tidings.backends.postgres._sql import migrations as bound_migrations
from tidings.backends.postgres._sql import queries

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


class DoIt(Command):
    n: int


class Ticked(Event):
    seq: int
    sent: float


# --- the database: one of our own, a fresh schema per contender --------------------------------


@dataclass
class Database:
    """A database this run creates on the server of ``--url``, and drops at the end."""

    url: str
    name: str = f"tidings_bench_{os.getpid()}"

    @property
    def params(self) -> dict[str, Any]:
        return conninfo_to_dict(self.url)

    def conninfo(self) -> str:
        return make_conninfo(self.url, dbname=self.name)

    def dsn(self, schema: str | None = None) -> str:
        """Our database as a postgresql:// URL (asyncpg, tidings with ``?schema=``)."""
        p = self.params
        password = f":{quote(p['password'])}" if p.get("password") else ""
        where = f"{p.get('host', 'localhost')}:{p.get('port', 5432)}/{self.name}"
        url = f"postgresql://{quote(p.get('user', 'postgres'))}{password}@{where}"
        return url if schema is None else f"{url}?schema={schema}"

    def admin(self, statement: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(self.name)))

    @contextlib.contextmanager
    def schema(self, tag: str) -> Any:
        """A fresh, empty schema, dropped afterwards."""
        name = f"{tag}_{next(_schemas)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            try:
                yield name
            finally:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


_schemas = itertools.count(1)
DB = Database(DEFAULT_URL)


@contextlib.asynccontextmanager
async def our_database() -> AsyncIterator[None]:
    DB.admin("CREATE DATABASE {}")
    try:
        yield
    finally:
        DB.admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def server() -> str:
    with psycopg.connect(DB.url) as conn:
        shown = []
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
            value = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            shown.append(f"{name}={value[0] if value else '?'}")
    p = DB.params
    return f"postgres  {p.get('host', 'localhost')}:{p.get('port', 5432)}, {', '.join(shown)}"


# --- raw psycopg -------------------------------------------------------------------------------

INSERT = (
    "INSERT INTO {}.log (global_position, stream, stream_position, id, kind, type, version, data, "
    "correlation_id, causation_id, headers, recorded_at) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
PAYLOAD = b'{"screening_id":"1234567","seat":"A1","customer":"customer-1"}'


def raw_psycopg() -> Contender:
    """One ``INSERT`` of a decided event's row per transaction, on tidings' own tables."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        with DB.schema("raw") as schema, psycopg.connect(DB.conninfo(), autocommit=True) as conn:
            for _version, _name, script in migrations("tidings.backends.postgres.migrations"):
                conn.execute(sql.SQL(script).format(schema=sql.Identifier(schema)))
            insert = sql.SQL(INSERT).format(sql.Identifier(schema))
            position = 0

            def transaction() -> int:
                nonlocal position
                position += 1
                cause = f"{position:036d}"
                row = (position, f"screening-{position}", 1, f"{position:036x}", "event",
                       "SeatReserved", 1, PAYLOAD, cause, cause, None, time.time())  # fmt: skip
                conn.execute(insert, row, prepare=True)
                return 1

            yield repeat(transaction)

    return contender


def ideal_append() -> Contender:
    """async psycopg (autocommit, prepared, binary) running tidings' own one-message append
    (``append_one``: the log's head moved, the stream's version checked, the row, a notify) on a
    new stream each time: the least an asyncio caller's append in tidings' order can take."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        with DB.schema("ideal") as schema:
            conn = await psycopg.AsyncConnection.connect(DB.conninfo(), autocommit=True)
            async with conn, conn.cursor(binary=True) as cur:
                for _version, _name, script in bound_migrations(schema):
                    await conn.execute(script)
                statement, ids = queries(schema)["append_one"], itertools.count()

                async def append() -> int:
                    n = next(ids)
                    await cur.execute(statement, {
                        "stream": f"screening-{n}", "base": 0, "id": f"{n:036x}", "kind": "event",
                        "type": "SeatReserved", "version": 1, "data": PAYLOAD,
                        "correlation_id": f"{n:036d}", "causation_id": f"{n:036d}",
                        "headers": None, "channel": f"tidings_{schema}"}, prepare=True)  # fmt: skip
                    await cur.fetchone()
                    return 1

                yield repeat(append)

    return contender


# --- tidings and eventsourcing appends ---------------------------------------------------------

IDS = itertools.count()


def tidings_invoke(callers: int) -> Contender:
    """``app.invoke`` of a command reserving one seat of a new screening, by ``callers`` tasks."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        with DB.schema("tidings") as schema:
            async with cinema_app(DB.dsn(schema)) as app:

                async def invoke() -> int:
                    await app.invoke(reserve(str(next(IDS)), 1))
                    return 1

                yield repeat(invoke) if callers == 1 else concurrently(invoke, callers)

    return contender


def eventsourcing_threads(threads: int) -> Contender:
    """eventsourcing's PostgreSQL ``Application`` saving a new 1-event aggregate, from ``threads``."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        defaults = {"host": "localhost", "port": 5432, "user": "postgres", "password": ""}
        settings = {f"POSTGRES_{k.upper()}": str(DB.params.get(k, v)) for k, v in defaults.items()}
        with DB.schema("es") as schema:
            env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": DB.name}
            app: Application[UUID] = Application(env={**env, **settings, "POSTGRES_SCHEMA": schema})
            with es_saving(app) as save:
                yield in_threads(save, threads)

    return contender


# --- sent commands: tidings, pgqueuer, procrastinate -------------------------------------------

CHUNK = 1000


def tidings_commands(n: int) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        with DB.schema("cmd_td") as schema:
            app = App("commands", store=DB.dsn(schema))

            @app.command
            async def do_it(cmd: DoIt, ctx: Context) -> None:
                return None

            async with app:
                worker = app.worker()
                start = time.perf_counter()
                tickets: list[Any] = []
                for first in range(0, n, CHUNK):
                    sends = (app.send(DoIt(n=i)) for i in range(first, min(n, first + CHUNK)))
                    tickets += await asyncio.gather(*sends)
                await worker.drain()
                elapsed = time.perf_counter() - start
                outcomes = [await app.outcome(t.message_id) for t in tickets[::100] + tickets[-1:]]
                ok = all(o.status == "succeeded" for o in outcomes)
                check(ok, f"cmd tidings: {[o.status for o in outcomes if o.status != 'succeeded']}")
        return Sample(n, elapsed)

    return trial


def pgqueuer_commands(n: int) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        with DB.schema("cmd_pgq") as schema:
            settings = {"search_path": schema}
            setup, producer, consumer = [
                await asyncpg.connect(DB.dsn(), server_settings=settings) for _ in range(3)
            ]
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
                    payloads = [f'{{"n":{i}}}'.encode() for i in range(first, first + k)]
                    await queries.enqueue(["noop"] * k, payloads, [0] * k)  # type: ignore[arg-type]
                await pgq.qm.run(mode=QueueExecutionMode.drain)
                elapsed = time.perf_counter() - start
                left = await setup.fetchval("SELECT count(*) FROM pgqueuer")
                check(handled == n and left == 0, f"cmd pgqueuer: {handled} of {n}, {left} left")
            finally:
                for conn in (setup, producer, consumer):
                    await conn.close()
        return Sample(n, elapsed)

    return trial


def procrastinate_commands(n: int) -> Callable[[], Awaitable[Sample]]:
    async def trial() -> Sample:
        with DB.schema("cmd_proc") as schema:
            options = {"options": f"-c search_path={schema}"}
            app = procrastinate.App(
                connector=procrastinate.PsycopgConnector(conninfo=DB.conninfo(), kwargs=options)
            )
            handled = 0

            @app.task(name="noop")
            async def noop(n: int) -> None:
                nonlocal handled
                handled += 1

            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                start = time.perf_counter()
                for first in range(0, n, CHUNK):
                    jobs: list[dict[str, Any]] = [
                        {"n": i} for i in range(first, min(n, first + CHUNK))
                    ]
                    await noop.batch_defer_async(*jobs)
                await app.run_worker_async(wait=False, install_signal_handlers=False)
                elapsed = time.perf_counter() - start
            check(handled == n, f"cmd procrastinate: {handled} of {n} handled")
        return Sample(n, elapsed)

    return trial


# --- latency: the worker in another process ----------------------------------------------------

STREAMS = 100


async def latency_child(url: str, total: int) -> None:
    """The worker process: deliver ``total`` Ticked events, then print each one's latency."""
    app = App("latency", store=url)
    latencies: dict[int, float] = {}
    everything = asyncio.Event()

    @app.subscriber("lat")
    async def on_ticked(e: Ticked, ctx: Context) -> None:
        latencies[e.seq] = time.monotonic() - e.sent
        if len(latencies) >= total:
            everything.set()

    async with app:
        worker = app.worker()
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = await app.store.partitions("lat")
            if parts and all(p.owner == worker.id for p in parts):
                break
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), timeout=120)
        worker.stop()
        await task
    print(json.dumps(latencies), flush=True)


def latency(rate: int, seconds: float) -> Callable[[], Awaitable[dict[str, float]]]:
    async def measure() -> dict[str, float]:
        warm = rate // 2
        total = warm + int(seconds * rate)
        committed: dict[int, float] = {}
        with DB.schema("lat") as schema:
            async with App("latency", store=DB.dsn(schema)) as app:  # migrated before the child
                child = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--latency-child", DB.dsn(schema), str(total),
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                assert child.stdout is not None
                try:
                    line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
                    if line.strip() != b"ready":
                        raise RuntimeError(f"the latency child said {line!r}")

                    async def publish(seq: int) -> None:
                        sent = time.monotonic()
                        await app.publish(Ticked(seq=seq, sent=sent), stream=f"lat-{seq % STREAMS}")
                        committed[seq] = time.monotonic() - sent

                    pending: set[asyncio.Task[None]] = set()
                    start = time.monotonic()
                    for seq in range(total):
                        await asyncio.sleep(max(0.0, start + seq / rate - time.monotonic()))
                        pending.add(t := asyncio.create_task(publish(seq)))
                        t.add_done_callback(pending.discard)
                    await asyncio.gather(*pending)
                    out, _ = await asyncio.wait_for(child.communicate(), timeout=150)
                finally:
                    if child.returncode is None:
                        child.kill()
                        await child.wait()
        found = {int(k): v for k, v in json.loads(out.decode().splitlines()[-1]).items()}
        done = [s for s in range(warm, total) if s in found]
        check(len(done) == total - warm, f"latency: {len(done)} of {total - warm} handled")
        to_handled = [found[s] * 1000 for s in done]
        return {
            "p99 ms": percentile(to_handled, 99),
            "p50 ms": percentile(to_handled, 50),
            "max ms": max(to_handled),
            "publisher's commit p99 ms": percentile([committed[s] * 1000 for s in done], 99),
        }

    return measure


# --- the slots ---------------------------------------------------------------------------------


def slots(commands: int, latency_seconds: float) -> list[Slot]:
    return [
        Pair("seq", "PostgreSQL, 1 caller: 1-event invoke / raw psycopg 1 row/tx",
             ("tidings", "raw psycopg"), tidings_invoke(1), raw_psycopg(), Floor(">=", 0.7)),
        Pair("ideal", "yardstick: async psycopg, tidings' append statement / raw psycopg",
             ("async append_one", "raw psycopg"), ideal_append(), raw_psycopg()),
        Pair("many", "PostgreSQL, 16 callers / eventsourcing 16 threads",
             ("tidings", "eventsourcing"), tidings_invoke(16), eventsourcing_threads(16),
             Floor(">=", 10), block=0.2),
        Pair("cmd-pgq", "sent commands, send to last outcome: tidings / pgqueuer",
             ("tidings", "pgqueuer"), one_shot(tidings_commands(commands)),
             one_shot(pgqueuer_commands(commands)), Floor(">=", 2), turns=1, warm=0),
        Pair("cmd-proc", "sent commands, send to last outcome: tidings / procrastinate",
             ("tidings", "procrastinate"), one_shot(tidings_commands(commands)),
             one_shot(procrastinate_commands(commands)), turns=1, warm=0),
        Single("latency", "p99 publish->handled at 1,000/s, worker in another process",
               latency(1000, latency_seconds), Floor("<", 20), unit="ms"),
    ]  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--latency-child"]:
        asyncio.run(latency_child(sys.argv[2], int(sys.argv[3])))
        sys.exit()
    p = parser(__doc__, rounds=5, seconds=0.8)
    p.add_argument("--url", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    p.add_argument("--commands", type=int, default=5_000, help="jobs per command trial")
    p.add_argument("--latency-seconds", type=float, default=5.0, help="latency's measured window")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.commands, args.latency_seconds = 2, 0.4, 2_000, 2.0
    DB.url = args.url
    for name in ("pgqueuer", "procrastinate", "eventsourcing", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    packages = ["msgspec", "psycopg", "psycopg-binary", "psycopg-pool", "eventsourcing",
                "pgqueuer", "asyncpg", "procrastinate"]  # fmt: skip
    head = header(packages, [server()])
    main(slots(args.commands, args.latency_seconds), args, head, around=our_database)
