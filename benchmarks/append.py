"""Append throughput and dispatch overhead of tidings, side by side with its yardsticks.

Run by hand (not in CI)::

    .venv/bin/python benchmarks/append.py                 # 7 rounds, about 2 minutes
    .venv/bin/python benchmarks/append.py --quick         # 3 short rounds, about 30 s
    .venv/bin/python benchmarks/append.py --only raw-1,td-1,pair-1 --rounds 15 --per-round

To measure another checkout of tidings than the installed one, put its ``src`` first on
``PYTHONPATH``; the header names the source directory and the commit that were measured.

Contenders, all measured in one run:

* tidings on SQLite (``sqlite:////abs/path.db``, synchronous FULL by default, and NORMAL): a
  Decider command that appends 1 or 10 events to a new stream, invoked sequentially and by 16
  concurrent asyncio callers; 1,000-event appends (``app.append`` and a 1,000-event decision).
* the ``eventsourcing`` library's SQLite module: an Application saving a new Aggregate with 1 or
  10 events per save, sequentially and from 16 threads.
* raw ``sqlite3`` inserting the same rows into the same table (the schema is read from tidings'
  own migration file): 1 row per transaction and 1,000 rows per transaction.
* in memory: ``App(store="memory://").invoke`` of a plain command handler, bare and publishing one
  event, beside a minimal message bus in the style of "Architecture Patterns with Python".
* a yardstick, not a contender: a hand-written "minimal invoke" that does for the 1-event decider
  command only what any framework must with these messages (the command, two UUIDv7s, ``decide``,
  msgspec encoding, the row, the state kept in a dict), paired with raw sqlite3 like tidings. The
  distance between it and tidings is what tidings' own layers cost.

The disk this was written on is noisy (an fsync takes about 0.5 ms and varies by 40% and more from
one second to the next), so contenders are interleaved: every round runs each contender once for a
short slot on a fresh database file in the same directory, the order rotating from round to round.
The table shows the median over rounds with the min and max.

Two comparisons with raw sqlite3 are also measured *paired*: the two contenders, each on its own
fresh file, take turns in blocks of about 20 ms within one slot, so that both see the same disk.
The in-memory invoke with one event and the minimal bus with one event are paired the same way
(in steps of 200 dispatches), so that both see the same CPU. These targets are judged on the
paired ratio (the median over rounds); the ratio of the separately measured medians, the ratio
of the best rounds (noise only ever slows a contender down) and the range of the per-round ratios
are printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import inspect
import itertools
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application

import tidings
from bench_cinema import (  # the shared benchmark domain, beside this file
    SEATS,
    ReserveSeats,
    SeatReserved,
    cinema_app,
    es_new_screening,
    reserve,
    screening,
)
from tidings import App, Command, Context
from tidings.messages import uuid7_pair

# --- the cinema domain, for tidings ------------------------------------------------------------


# --- a minimal message bus, "Architecture Patterns with Python" style --------------------------


class BusCommand:
    __slots__ = ()


class BusEvent:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class BusReserveSeat(BusCommand):
    screening_id: str
    seat: str
    customer: str


@dataclass(frozen=True, slots=True)
class BusSeatReserved(BusEvent):
    screening_id: str
    seat: str
    customer: str


class UnitOfWork:
    """Where handlers leave the events that the bus dispatches after them."""

    def __init__(self) -> None:
        self.new_events: list[BusEvent] = []

    def collect_new_events(self) -> Iterator[BusEvent]:
        while self.new_events:
            yield self.new_events.pop(0)


BusCommandHandler = Callable[[Any, UnitOfWork], Any]
BusEventHandler = Callable[[Any, UnitOfWork], None]


class MessageBus:
    """Synchronous ``handle(message)``: a queue, one handler per command, any per event."""

    def __init__(
        self,
        uow: UnitOfWork,
        command_handlers: dict[type[BusCommand], BusCommandHandler],
        event_handlers: dict[type[BusEvent], list[BusEventHandler]],
    ) -> None:
        self.uow = uow
        self.command_handlers = command_handlers
        self.event_handlers = event_handlers

    def handle(self, message: BusCommand | BusEvent) -> Any:
        result = None
        queue: deque[BusCommand | BusEvent] = deque([message])
        while queue:
            current = queue.popleft()
            if isinstance(current, BusCommand):
                result = self.command_handlers[type(current)](current, self.uow)
            else:
                for handler in self.event_handlers.get(type(current), ()):
                    handler(current, self.uow)
            queue.extend(self.uow.collect_new_events())
        return result


# --- measuring ---------------------------------------------------------------------------------
# --- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """``count`` events, rows or dispatches in ``seconds``."""

    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def micros(self) -> float:
        return self.seconds / self.count * 1e6


@dataclass
class Series:
    """One line of the table: a contender's samples, one per round."""

    key: str
    label: str
    #: "events/s", "rows/s" (higher is better) or "µs" per dispatch (lower is better)
    unit: str
    section: str
    samples: list[Sample] = field(default_factory=list)

    def value(self, sample: Sample) -> float:
        return sample.micros if self.unit == "µs" else sample.rate

    def values(self) -> list[float]:
        return [self.value(s) for s in self.samples]

    def median(self) -> float:
        return statistics.median(self.values())

    def best(self) -> float:
        """The least disturbed round: noise only ever makes things slower."""
        return min(self.values()) if self.unit == "µs" else max(self.values())


#: One unit of work (a transaction, an invoke, a save); returns how many events or rows it wrote.
Step = Callable[[], Awaitable[int]] | Callable[[], int]
#: Sets a contender up on a database file and hands out its step.
Opener = Callable[[Path], contextlib.AbstractAsyncContextManager[Step]]
#: Measures for about ``seconds`` on files next to ``path``: one sample per series of its slot.
Run = Callable[[Path, float], Awaitable[list[Sample]]]


@dataclass
class Slot:
    """What one round runs at once: one contender, or two taking turns."""

    series: list[Series]
    run: Run
    #: "disk" slots last --seconds (per contender), "memory" slots --memory-seconds
    kind: str = "disk"


OBSERVED: dict[str, str] = {}
SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def observe(key: str, conn: sqlite3.Connection) -> None:
    """Read back the journal mode and synchronous setting a contender really runs with."""
    if key not in OBSERVED:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        OBSERVED[key] = f"{journal}/{SYNC_NAMES.get(sync, sync)}"


async def call(step: Step) -> int:
    result = step()
    return await result if inspect.isawaitable(result) else result


def sequential(opener: Opener) -> Run:
    """One caller doing ``step`` over and over for ``seconds``."""

    async def run(path: Path, seconds: float) -> list[Sample]:
        async with opener(path) as step:
            for _ in range(3):
                await call(step)
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            if inspect.iscoroutinefunction(step):
                while time.perf_counter() < deadline:
                    count += await step()
            else:
                while time.perf_counter() < deadline:
                    count += step()  # type: ignore[operator]
            elapsed = time.perf_counter() - start
        return [Sample(count, elapsed)]

    return run


def paired(first: Opener, second: Opener, block: float = 0.02) -> Run:
    """Two contenders on two files taking turns in blocks of ``block`` seconds, until each has
    run for ``seconds``: both meet the same disk weather."""

    async def run(path: Path, seconds: float) -> list[Sample]:
        async with (
            first(path.with_name(f"{path.stem}-a.db")) as step_a,
            second(path.with_name(f"{path.stem}-b.db")) as step_b,
        ):
            steps = (step_a, step_b)
            counts, times = [0, 0], [0.0, 0.0]
            for step in steps:
                for _ in range(3):
                    await call(step)
            while min(times) < seconds:
                for i, step in enumerate(steps):
                    start = time.perf_counter()
                    end = start + block
                    now = start
                    while now < end:
                        counts[i] += await call(step)
                        now = time.perf_counter()
                    times[i] += now - start
        return [Sample(counts[0], times[0]), Sample(counts[1], times[1])]

    return run


# --- raw sqlite3 -------------------------------------------------------------------------------


def log_schema() -> str:
    """tidings' own migration, so that raw sqlite3 writes to exactly the same table."""
    migrations = resources.files("tidings.backends.sqlite.migrations")
    return (migrations / "0001_log.sql").read_text("utf-8")


INSERT = (
    "INSERT INTO tidings_log (global_position, stream, stream_position, id, kind, type, version, "
    "data, correlation_id, causation_id, headers, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
PAYLOAD = b'{"screening_id":"1234567","seat":"A1","customer":"customer-1"}'


@contextlib.contextmanager
def raw_log(key: str, path: Path, sync: str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to a new file holding tidings' log table, in WAL mode at
    ``sync``, closed afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {sync.upper()}")
        conn.executescript(log_schema())
        observe(key, conn)
        yield conn
    finally:
        conn.close()


def raw_sqlite(key: str, sync: str, rows_per_tx: int) -> Opener:
    """Rows shaped like the ones tidings writes for a decided event (a 36-character id, the
    command's id as correlation and causation, a new stream for each transaction), inserted with
    ``BEGIN IMMEDIATE``, one ``execute`` (or ``executemany``), ``COMMIT``."""

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        with raw_log(key, path, sync) as conn:
            position = 0

            def transaction() -> int:
                nonlocal position
                stream = f"screening-{position}"
                cause = f"{position:036d}"
                rows = []
                for n in range(1, rows_per_tx + 1):
                    position += 1
                    rows.append(
                        (
                            position,
                            stream,
                            n,
                            f"{position:036x}",
                            "event",
                            "SeatReserved",
                            1,
                            PAYLOAD,
                            cause,
                            cause,
                            None,
                            time.time(),
                        )
                    )
                conn.execute("BEGIN IMMEDIATE")
                if rows_per_tx == 1:
                    conn.execute(INSERT, rows[0])
                else:
                    conn.executemany(INSERT, rows)
                conn.execute("COMMIT")
                return rows_per_tx

            yield transaction

    return open_


def ideal_invoke(key: str, sync: str) -> Opener:
    """The least a framework must do for a 1-event decider invoke with these messages, written by
    hand: make the command, two UUIDv7s, take a kept state from a dict, decide (the same
    ``decide``), encode the event with msgspec, insert its row as raw sqlite3 does, keep the
    state. Nothing checked, nothing shared: a yardstick for tidings' own layers, not a
    contender."""

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        with raw_log(key, path, sync) as conn:
            cur = conn.cursor()
            encode = msgspec.json.Encoder().encode
            decide, stream_of, initial = screening.decide, screening.stream, screening.initial
            states: dict[str, tuple[Any, int]] = {}
            ids = itertools.count()
            top = 0

            async def invoke() -> int:
                nonlocal top
                command = reserve(str(next(ids)), 1)
                command_id, event_id = uuid7_pair()
                stream = stream_of(command)
                state, version = states.pop(stream, None) or (initial, 0)
                (event,) = decide(command, state)
                top += 1
                row = (top, stream, version + 1, event_id, "event", "SeatReserved", 1,
                       encode(event), command_id, command_id, None, time.time())  # fmt: skip
                cur.execute("BEGIN IMMEDIATE")
                cur.execute(INSERT, row)
                cur.execute("COMMIT")
                states[stream] = (state, version + 1)
                return 1

            yield invoke

    return open_


# --- tidings on SQLite -------------------------------------------------------------------------

_ids = itertools.count()


def tidings_url(path: Path, sync: str) -> str:
    url = f"sqlite:///{path.resolve()}"  # an absolute path: four slashes
    return url if sync == "full" else f"{url}?synchronous={sync}"


@contextlib.asynccontextmanager
async def opened_cinema(key: str, path: Path, sync: str) -> AsyncIterator[App]:
    app = cinema_app(tidings_url(path, sync))
    async with app:
        await app.invoke(reserve(f"warm-{next(_ids)}", 1))
        observe(key, app.store._conn)  # type: ignore[attr-defined]
        yield app


def tidings_invoke(key: str, sync: str, seats: int) -> Opener:
    """One ``app.invoke`` of a decided command reserving ``seats`` seats of a new screening."""

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        async with opened_cinema(key, path, sync) as app:

            async def invoke() -> int:
                await app.invoke(reserve(str(next(_ids)), seats))
                return seats

            yield invoke

    return open_


def tidings_concurrent(key: str, sync: str, seats: int, callers: int) -> Run:
    """``callers`` asyncio tasks, each invoking its own commands one after the other."""

    async def run(path: Path, seconds: float) -> list[Sample]:
        async with opened_cinema(key, path, sync) as app:
            deadline = time.perf_counter() + seconds

            async def caller() -> int:
                done = 0
                while time.perf_counter() < deadline:
                    await app.invoke(reserve(str(next(_ids)), seats))
                    done += seats
                return done

            start = time.perf_counter()
            counts = await asyncio.gather(*(caller() for _ in range(callers)))
            elapsed = time.perf_counter() - start
        return [Sample(sum(counts), elapsed)]

    return run


def tidings_append(key: str, sync: str, size: int) -> Opener:
    """One ``app.append`` of ``size`` events to a new stream."""
    events = [
        SeatReserved(screening_id="batch", seat=SEATS[i % len(SEATS)], customer="customer-1")
        for i in range(size)
    ]

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        async with opened_cinema(key, path, sync) as app:

            async def append() -> int:
                await app.append(f"batch-{next(_ids)}", events)
                return size

            yield append

    return open_


def tidings_decide_batch(key: str, sync: str, size: int) -> Opener:
    """One ``app.invoke`` of a command whose decision is ``size`` events."""
    seats = [f"S{i}" for i in range(size)]

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        async with opened_cinema(key, path, sync) as app:

            async def invoke() -> int:
                await app.invoke(
                    ReserveSeats(screening_id=str(next(_ids)), seats=seats, customer="c-1")
                )
                return size

            yield invoke

    return open_


# --- eventsourcing -----------------------------------------------------------------------------


@contextlib.contextmanager
def es_application(key: str, path: Path) -> Iterator[Application[UUID]]:
    app: Application[UUID] = Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    try:
        app.save(es_new_screening(1))
        datastore = app.factory.datastore  # type: ignore[attr-defined]
        with datastore.get_connection(commit=False) as conn:
            observe(key, conn._sqlite_conn)
        yield app
    finally:
        app.close()


def eventsourcing_save(key: str, seats: int) -> Opener:
    """One ``app.save`` of a new aggregate holding ``seats`` events."""

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        with es_application(key, path) as app:

            def save() -> int:
                app.save(es_new_screening(seats))
                return seats

            yield save

    return open_


def eventsourcing_threads(key: str, seats: int, threads: int) -> Run:
    """``threads`` threads, each saving new aggregates one after the other."""

    async def run(path: Path, seconds: float) -> list[Sample]:
        with es_application(key, path) as app:
            deadline = time.perf_counter() + seconds
            counts = [0] * threads

            def worker(index: int) -> None:
                done = 0
                while time.perf_counter() < deadline:
                    app.save(es_new_screening(seats))
                    done += seats
                counts[index] = done

            pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
            start = time.perf_counter()
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            elapsed = time.perf_counter() - start
        return [Sample(sum(counts), elapsed)]

    return run


# --- in memory ---------------------------------------------------------------------------------

BATCH = 200


class Ping(Command):
    screening_id: str


class ReserveOne(Command):
    screening_id: str
    seat: str
    customer: str


def tidings_memory(with_event: bool) -> Opener:
    """``await app.invoke(command)`` on ``memory://`` of a plain (sync) command handler, ``BATCH``
    times a step."""

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        app = App("memory", store="memory://")
        if with_event:

            @app.command
            def reserve_one(cmd: ReserveOne, ctx: Context) -> None:
                ctx.publish(
                    SeatReserved(
                        screening_id=cmd.screening_id, seat=cmd.seat, customer=cmd.customer
                    )
                )

            command: Command = ReserveOne(screening_id="1", seat="A1", customer="customer-1")
        else:

            @app.command
            def ping(cmd: Ping, ctx: Context) -> None:
                pass

            command = Ping(screening_id="1")
        invoke = app.invoke
        async with app:

            async def step() -> int:
                for _ in range(BATCH):
                    await invoke(command)
                return BATCH

            yield step

    return open_


def bus_memory(with_event: bool) -> Opener:
    """``bus.handle(command)``, ``BATCH`` times a step; with an event, one event handler that
    does nothing."""

    @contextlib.asynccontextmanager
    async def open_(path: Path) -> AsyncIterator[Step]:
        def reserve_seat(cmd: BusReserveSeat, uow: UnitOfWork) -> None:
            if with_event:
                uow.new_events.append(BusSeatReserved(cmd.screening_id, cmd.seat, cmd.customer))

        def seat_reserved(evt: BusSeatReserved, uow: UnitOfWork) -> None:
            pass

        bus = MessageBus(
            UnitOfWork(), {BusReserveSeat: reserve_seat}, {BusSeatReserved: [seat_reserved]}
        )
        handle = bus.handle
        command = BusReserveSeat("1", "A1", "customer-1")

        def step() -> int:
            for _ in range(BATCH):
                handle(command)
            return BATCH

        yield step

    return open_


# --- the contenders and the targets ------------------------------------------------------------

ONE = "one caller, a new stream per command or save"
MANY = "16 concurrent callers (asyncio tasks; threads for eventsourcing)"
BATCHES = "1,000 rows or events in one transaction"
PAIRED = "paired: two contenders taking turns every 20 ms within one slot"
MEMORY = "in memory: time per dispatch"


def slots() -> list[Slot]:
    """Every slot of a round, in the order of the table (rounds rotate through this order)."""
    out: list[Slot] = []

    def one(section: str, key: str, label: str, unit: str, run: Run, kind: str = "disk") -> None:
        out.append(Slot([Series(key, label, unit, section)], run, kind))

    def pair(key: str, label: str, unit: str, make: Callable[[str], Opener],
             raw_key: str, raw_label: str, make_raw: Callable[[str], Opener],
             raw_unit: str = "rows/s", kind: str = "disk") -> None:  # fmt: skip
        series = [Series(key, label, unit, PAIRED), Series(raw_key, raw_label, raw_unit, PAIRED)]
        out.append(Slot(series, paired(make(key), make_raw(raw_key)), kind))

    # fmt: off
    one(ONE,   "raw-1-full",      "raw sqlite3, 1 row/tx, FULL",           "rows/s",   sequential(raw_sqlite("raw-1-full", "full", 1)))
    one(ONE,   "td-1-full",       "tidings invoke, 1 event, FULL",         "events/s", sequential(tidings_invoke("td-1-full", "full", 1)))
    one(ONE,   "td-10-full",      "tidings invoke, 10 events, FULL",       "events/s", sequential(tidings_invoke("td-10-full", "full", 10)))
    one(ONE,   "es-1",            "eventsourcing save, 1 event",           "events/s", sequential(eventsourcing_save("es-1", 1)))
    one(ONE,   "es-10",           "eventsourcing save, 10 events",         "events/s", sequential(eventsourcing_save("es-10", 10)))
    one(ONE,   "raw-1-normal",    "raw sqlite3, 1 row/tx, NORMAL",         "rows/s",   sequential(raw_sqlite("raw-1-normal", "normal", 1)))
    one(ONE,   "td-1-normal",     "tidings invoke, 1 event, NORMAL",       "events/s", sequential(tidings_invoke("td-1-normal", "normal", 1)))
    one(ONE,   "td-10-normal",    "tidings invoke, 10 events, NORMAL",     "events/s", sequential(tidings_invoke("td-10-normal", "normal", 10)))
    one(MANY,  "td16-1-full",     "tidings 16 callers, 1 event, FULL",     "events/s", tidings_concurrent("td16-1-full", "full", 1, 16))
    one(MANY,  "td16-10-full",    "tidings 16 callers, 10 events, FULL",   "events/s", tidings_concurrent("td16-10-full", "full", 10, 16))
    one(MANY,  "es16-1",          "eventsourcing 16 threads, 1 event",     "events/s", eventsourcing_threads("es16-1", 1, 16))
    one(MANY,  "es16-10",         "eventsourcing 16 threads, 10 events",   "events/s", eventsourcing_threads("es16-10", 10, 16))
    one(MANY,  "td16-1-normal",   "tidings 16 callers, 1 event, NORMAL",   "events/s", tidings_concurrent("td16-1-normal", "normal", 1, 16))
    one(MANY,  "td16-10-normal",  "tidings 16 callers, 10 events, NORMAL", "events/s", tidings_concurrent("td16-10-normal", "normal", 10, 16))
    one(BATCHES, "raw-1000-full",    "raw sqlite3, 1000 rows/tx, FULL",    "rows/s",   sequential(raw_sqlite("raw-1000-full", "full", 1000)))
    one(BATCHES, "td-append-full",   "tidings app.append 1000, FULL",      "events/s", sequential(tidings_append("td-append-full", "full", 1000)))
    one(BATCHES, "td-decide-1000",   "tidings invoke, 1000 events, FULL",  "events/s", sequential(tidings_decide_batch("td-decide-1000", "full", 1000)))
    one(BATCHES, "raw-1000-normal",  "raw sqlite3, 1000 rows/tx, NORMAL",  "rows/s",   sequential(raw_sqlite("raw-1000-normal", "normal", 1000)))
    one(BATCHES, "td-append-normal", "tidings app.append 1000, NORMAL",    "events/s", sequential(tidings_append("td-append-normal", "normal", 1000)))
    pair("pair-1-td",    "tidings invoke, 1 event, FULL",  "events/s", lambda k: tidings_invoke(k, "full", 1),
         "pair-1-raw",   "raw sqlite3, 1 row/tx, FULL",    lambda k: raw_sqlite(k, "full", 1))
    pair("pair-ideal",   "hand-written minimal invoke, FULL", "events/s", lambda k: ideal_invoke(k, "full"),
         "pair-ideal-raw", "raw sqlite3, 1 row/tx, FULL",   lambda k: raw_sqlite(k, "full", 1))
    pair("pair-1000-td", "tidings app.append 1000, FULL",  "events/s", lambda k: tidings_append(k, "full", 1000),
         "pair-1000-raw", "raw sqlite3, 1000 rows/tx, FULL", lambda k: raw_sqlite(k, "full", 1000))
    pair("pair-mem-td-1",  "tidings memory:// invoke, 1 event", "µs", lambda k: tidings_memory(True),
         "pair-mem-bus-1", "minimal bus handle, 1 event",       lambda k: bus_memory(True), "µs", "memory")
    one(MEMORY, "mem-td-0",  "tidings memory:// invoke, bare",    "µs", sequential(tidings_memory(False)), "memory")
    one(MEMORY, "mem-td-1",  "tidings memory:// invoke, 1 event", "µs", sequential(tidings_memory(True)), "memory")
    one(MEMORY, "mem-bus-0", "minimal bus handle, bare",          "µs", sequential(bus_memory(False)), "memory")
    one(MEMORY, "mem-bus-1", "minimal bus handle, 1 event",       "µs", sequential(bus_memory(True)), "memory")
    # fmt: on
    return out


@dataclass(frozen=True)
class Target:
    label: str
    numerator: str
    denominator: str
    #: "min": the ratio must be at least ``bound``; "max": at most
    sense: str
    bound: float
    primary: bool = True


# fmt: off
TARGETS = [
    Target("1 caller, 1-event invokes FULL / raw 1 row/tx FULL (paired)", "pair-1-td",      "pair-1-raw",      "min", 0.90),
    Target("16 callers, 1 event FULL / eventsourcing 16 threads",         "td16-1-full",    "es16-1",          "min", 4.0),
    Target("app.append 1000 FULL / raw 1000 rows/tx FULL (paired)",       "pair-1000-td",   "pair-1000-raw",   "min", 0.5),
    Target("memory invoke + 1 event / minimal bus + 1 event (paired)",    "pair-mem-td-1",  "pair-mem-bus-1",  "max", 3.0),
    Target("1 caller, 1-event invokes FULL / raw 1 row/tx FULL (slots)",  "td-1-full",      "raw-1-full",      "min", 0.90, False),
    Target("hand-written minimal invoke FULL / raw 1 row/tx FULL (paired)", "pair-ideal",   "pair-ideal-raw",  "min", 0.90, False),
    Target("app.append 1000 FULL / raw 1000 rows/tx FULL (slots)",        "td-append-full", "raw-1000-full",   "min", 0.5, False),
    Target("16 callers, 1 event FULL / eventsourcing sequential",         "td16-1-full",    "es-1",            "min", 4.0, False),
    Target("16 callers, 10 events FULL / eventsourcing 16 threads, 10",   "td16-10-full",   "es16-10",         "min", 4.0, False),
    Target("1 caller, 1 event NORMAL / raw 1 row/tx NORMAL",              "td-1-normal",    "raw-1-normal",    "min", 0.90, False),
    Target("app.append 1000 NORMAL / raw 1000 rows/tx NORMAL",            "td-append-normal", "raw-1000-normal", "min", 0.5, False),
    Target("invoke deciding 1000 events FULL / raw 1000 rows/tx FULL",    "td-decide-1000", "raw-1000-full",   "min", 0.5, False),
    Target("memory invoke + 1 event / minimal bus + 1 event (slots)",     "mem-td-1",       "mem-bus-1",       "max", 3.0, False),
    Target("memory invoke bare / minimal bus bare (slots)",               "mem-td-0",       "mem-bus-0",       "max", 3.0, False),
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
            ["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=root, check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"{sha}{' + uncommitted changes in src/' if changed else ''}"


def command_line() -> str:
    python = os.path.relpath(sys.executable) if sys.prefix != sys.base_prefix else sys.executable
    pythonpath = os.environ.get("PYTHONPATH")
    prefix = f"PYTHONPATH={pythonpath} " if pythonpath else ""
    return f"{prefix}{python} {' '.join(sys.argv)}"


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
    ]


# --- running and reporting ---------------------------------------------------------------------
# --- running and reporting ---------------------------------------------------------------------


def remove_files(directory: Path, pattern: str) -> None:
    for leftover in directory.glob(pattern):
        leftover.unlink()


async def run_all(chosen: list[Slot], args: argparse.Namespace, directory: Path) -> None:
    number = 0
    for round_no in range(args.rounds):
        shift = round_no % len(chosen)
        started = time.perf_counter()
        for slot in chosen[shift:] + chosen[:shift]:
            number += 1
            seconds = args.seconds if slot.kind == "disk" else args.memory_seconds
            samples = await slot.run(directory / f"slot-{number}.db", seconds)
            for series, sample in zip(slot.series, samples, strict=True):
                series.samples.append(sample)
            remove_files(directory, f"slot-{number}*")
        print(
            f"round {round_no + 1}/{args.rounds} done in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )


def fmt(value: float, unit: str) -> str:
    return f"{value:,.1f}" if unit == "µs" else f"{value:,.0f}"


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
        values = s.values()
        lines.append(
            f"{s.label:<40} {s.unit if s.unit != 'µs' else 'µs/op':>8} "
            f"{fmt(s.median(), s.unit):>10} {fmt(min(values), s.unit):>10} "
            f"{fmt(max(values), s.unit):>10}  {OBSERVED.get(s.key, '-'):<11} {s.key}"
        )
    if per_round:
        lines += ["", "per round (rounds in order; the order of slots within a round rotates):"]
        for s in every:
            listed = "  ".join(fmt(v, s.unit) for v in s.values())
            lines.append(f"  {s.key:<18} {listed}")
    lines += [
        "",
        "targets. paired: median of the per-round ratios; otherwise the ratio of the medians.",
        "beside it: the ratio of the best rounds, and [the lowest-highest ratio within one round]",
    ]
    for t in TARGETS:
        num, den = by_key.get(t.numerator), by_key.get(t.denominator)
        if num is None or den is None:
            continue
        ratios = [a / b for a, b in zip(num.values(), den.values(), strict=True)]
        paired_ratio = num.section == PAIRED
        ratio = statistics.median(ratios) if paired_ratio else num.median() / den.median()
        best = num.best() / den.best()
        met = ratio >= t.bound if t.sense == "min" else ratio <= t.bound
        want = f"{'>=' if t.sense == 'min' else '<='} {t.bound:g}x"
        verdict = (
            ("MET" if met else "MISSED") if t.primary else ("(info) ok" if met else "(info) no")
        )
        lines.append(
            f"{t.label:<62} {ratio:6.2f}x  best {best:5.2f}x  [{min(ratios):.2f}-{max(ratios):.2f}]"
            f"  want {want:<8} {verdict}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--seconds", type=float, default=0.6, help="length of one disk slot (default 0.6)"
    )
    parser.add_argument(
        "--memory-seconds",
        type=float,
        default=0.4,
        help="length of one in-memory slot (default 0.4)",
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.3 s slots")
    parser.add_argument("--per-round", action="store_true", help="also list every round's value")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the database files go (default: a temp dir)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated key prefixes, e.g. raw-1,td-1 (default: all; keys are in the table)",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.memory_seconds = 3, 0.3, 0.2
    chosen = slots()
    if args.only:
        prefixes = tuple(p.strip() for p in args.only.split(",") if p.strip())
        chosen = [s for s in chosen if any(x.key.startswith(prefixes) for x in s.series)]
    directory = Path(tempfile.mkdtemp(prefix="tidings-bench-", dir=args.dir)).resolve()
    try:
        print("\n".join(machine(directory)), flush=True)
        print(
            f"plan        {len(chosen)} slots x {args.rounds} rounds, disk slots {args.seconds:g}s "
            f"per contender, memory slots {args.memory_seconds:g}s, fresh files per slot\n",
            flush=True,
        )
        asyncio.run(run_all(chosen, args, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("\n".join(report(chosen, args.per_round)))


if __name__ == "__main__":
    main()
