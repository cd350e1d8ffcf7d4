"""Appends to the log on SQLite and in memory, paired with raw sqlite3, eventsourcing and a bus.

Run by hand (not in CI)::

    python benchmarks/append.py               # 7 rounds, about a minute
    python benchmarks/append.py --quick       # 3 short rounds, about 20 s
    python benchmarks/append.py --only seq --rounds 15

Every slot is a pair (see ``_pairs.py``): tidings and its peer, each on its own fresh file in the
same directory, take turns in short blocks, and the round's ratio is tidings' rate over the
peer's (in memory: tidings' time per dispatch over the bus's). SQLite runs in WAL mode at
``synchronous=FULL`` (tidings' default) on both sides.

* ``seq``: one caller, ``app.invoke`` of a 1-event ``Decider`` command on a new stream, against
  raw ``sqlite3`` inserting the same row into the same table (tidings' own migrations) with
  ``BEGIN IMMEDIATE``, ``INSERT``, ``COMMIT``.
* ``ideal`` (a yardstick): a hand-written minimal decided invoke (the command, two ids,
  ``decide``, msgspec encoding, the row, the state kept in a dict) against the same raw sqlite3;
  the distance from ``seq`` to it is what tidings' own layers cost.
* ``many``: 16 asyncio tasks invoking 1-event commands, against eventsourcing's SQLite
  ``Application`` saving a new 1-event aggregate from 16 threads.
* ``batch``: one ``app.append`` of 1,000 events to a new stream, against raw sqlite3 inserting
  1,000 rows in one transaction (``executemany``).
* ``memory``: ``App(store="memory://").invoke`` of a plain handler publishing one event, against
  a minimal message bus in the style of "Architecture Patterns with Python" whose handler raises
  one event that one handler receives.
* ``minimal`` (a yardstick): a hand-written in-memory invoke doing the least that one must (the
  command checked, two ids, the event encoded and checked, its envelope in a log and its
  indexes) against the same bus: the distance from ``memory`` to it is what the layers cost.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application

from _pairs import (
    Contender,
    Floor,
    Pair,
    Slot,
    Turn,
    concurrently,
    fresh_file,
    header,
    in_threads,
    main,
    parser,
    repeat,
)
from bench_cinema import (
    SEATS,
    SeatReserved,
    cinema_app,
    es_saving,
    reserve,
    screening,
)
from tidings import App, Command, Context, Envelope, uuid7
from tidings.backends._sql import migrations

# --- raw sqlite3 -------------------------------------------------------------------------------

INSERT = (
    "INSERT INTO tidings_log (global_position, stream, stream_position, id, kind, type, version, "
    "data, correlation_id, causation_id, headers, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
PAYLOAD = b'{"screening_id":"1234567","seat":"A1","customer":"customer-1"}'


@contextlib.contextmanager
def raw_log() -> Iterator[sqlite3.Connection]:
    """A plain connection to a new file holding tidings' tables, in WAL mode at FULL."""
    with fresh_file("raw") as path:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            for _version, _name, script in migrations("tidings.backends.sqlite.migrations"):
                conn.executescript(script)
            yield conn
        finally:
            conn.close()


def raw_sqlite(rows_per_tx: int) -> Contender:
    """Rows shaped like a decided event's (a 36-character id, the command's id as correlation and
    causation, a new stream per transaction): ``BEGIN IMMEDIATE``, one insert, ``COMMIT``."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        with raw_log() as conn:
            position = 0

            def transaction() -> int:
                nonlocal position
                stream, cause = f"screening-{position}", f"{position:036d}"
                rows = []
                for n in range(1, rows_per_tx + 1):
                    position += 1
                    rows.append((position, stream, n, f"{position:036x}", "event", "SeatReserved",
                                 1, PAYLOAD, cause, cause, None, time.time()))  # fmt: skip
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT, rows) if rows_per_tx > 1 else conn.execute(INSERT, rows[0])
                conn.execute("COMMIT")
                return rows_per_tx

            yield repeat(transaction)

    return contender


def ideal_invoke() -> Contender:
    """The least a decided invoke with these messages must do, written by hand: a yardstick."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        with raw_log() as conn:
            encode = msgspec.json.Encoder().encode
            states: dict[str, tuple[Any, int]] = {}
            ids = itertools.count()
            top = 0

            async def invoke() -> int:
                nonlocal top
                command = reserve(str(next(ids)), 1)
                command_id, event_id = uuid7(), uuid7()
                stream = screening.stream(command)
                state, version = states.pop(stream, None) or (frozenset(), 0)
                (event,) = screening.decide(command, state)
                top += 1
                row = (top, stream, version + 1, event_id, "event", "SeatReserved", 1,
                       encode(event), command_id, command_id, None, time.time())  # fmt: skip
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT, row)
                conn.execute("COMMIT")
                states[stream] = (state, version + 1)
                return 1

            yield repeat(invoke)

    return contender


# --- tidings on SQLite -------------------------------------------------------------------------

IDS = itertools.count()


@contextlib.asynccontextmanager
async def cinema() -> AsyncIterator[App]:
    """The benchmark's cinema app on a new file (an absolute path: ``sqlite:////...``)."""
    with fresh_file("tidings") as path:
        async with cinema_app(f"sqlite:///{path}") as app:
            await app.invoke(reserve(f"warm-{next(IDS)}", 1))
            yield app


def tidings_invoke(callers: int) -> Contender:
    """``app.invoke`` of a command reserving one seat of a new screening, by ``callers`` tasks."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        async with cinema() as app:

            async def invoke() -> int:
                await app.invoke(reserve(str(next(IDS)), 1))
                return 1

            yield repeat(invoke) if callers == 1 else concurrently(invoke, callers)

    return contender


def tidings_append(size: int) -> Contender:
    """One ``app.append`` of ``size`` events to a new stream."""
    events = [SeatReserved(screening_id="batch", seat=SEATS[i % len(SEATS)], customer="c-1")
              for i in range(size)]  # fmt: skip

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        async with cinema() as app:

            async def append() -> int:
                await app.append(f"batch-{next(IDS)}", events)
                return size

            yield repeat(append)

    return contender


# --- eventsourcing -----------------------------------------------------------------------------


def eventsourcing_threads(threads: int) -> Contender:
    """eventsourcing's SQLite ``Application`` saving a new 1-event aggregate, from ``threads``."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        with fresh_file("es") as path:
            env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
            app: Application[UUID] = Application(env=env)
            with es_saving(app) as save:
                yield in_threads(save, threads)

    return contender


# --- in memory: tidings and a minimal message bus ----------------------------------------------

#: dispatches per step, so that the loop's own cost is small beside them
BATCH = 200


class ReserveOne(Command):
    screening_id: str
    seat: str
    customer: str


def tidings_memory() -> Contender:
    """``await app.invoke(command)`` on ``memory://`` of a plain handler publishing one event."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        app = App("memory", store="memory://")

        @app.command
        def reserve_one(cmd: ReserveOne, ctx: Context) -> None:
            ctx.publish(SeatReserved(screening_id=cmd.screening_id, seat=cmd.seat,
                                     customer=cmd.customer))  # fmt: skip

        command = ReserveOne(screening_id="1", seat="A1", customer="customer-1")
        async with app:

            async def step() -> int:
                for _ in range(BATCH):
                    await app.invoke(command)
                return BATCH

            yield repeat(step)

    return contender


def minimal_memory() -> Contender:
    """The least an in-memory invoke of that handler must do, written by hand (a yardstick): the
    command checked against its class, two ids, the event encoded and checked, its envelope
    appended to a log, a stream index and an id index."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        encode = msgspec.json.Encoder().encode
        check_command = msgspec.json.Decoder(ReserveOne).decode
        check_event = msgspec.json.Decoder(SeatReserved).decode
        log: list[Envelope] = []
        streams: dict[str, list[Envelope]] = {}
        positions: dict[str, int] = {}
        command = ReserveOne(screening_id="1", seat="A1", customer="customer-1")

        async def invoke(cmd: ReserveOne) -> None:
            check_command(encode(cmd))
            command_id, event_id = uuid7(), uuid7()
            data = encode(SeatReserved(screening_id=cmd.screening_id, seat=cmd.seat,
                                       customer=cmd.customer))  # fmt: skip
            check_event(data)
            stream = streams.setdefault("SeatReserved", [])
            env = Envelope(event_id, "event", "SeatReserved", 1, "SeatReserved", len(stream) + 1,
                           len(log) + 1, time.time(), data, command_id, command_id)  # fmt: skip
            log.append(env)
            stream.append(env)
            positions[event_id] = env.global_position

        async def step() -> int:
            for _ in range(BATCH):
                await invoke(command)
            return BATCH

        yield repeat(step)

    return contender


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


class MessageBus:
    """Synchronous ``handle(message)``: a queue, one handler per command, any per event."""

    def __init__(
        self,
        uow: UnitOfWork,
        command_handlers: dict[type[BusCommand], Callable[[Any, UnitOfWork], Any]],
        event_handlers: dict[type[BusEvent], list[Callable[[Any, UnitOfWork], None]]],
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


def bus_memory() -> Contender:
    """``bus.handle(command)`` of a handler raising one event that one handler receives."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        def reserve_seat(cmd: BusReserveSeat, uow: UnitOfWork) -> None:
            uow.new_events.append(BusSeatReserved(cmd.screening_id, cmd.seat, cmd.customer))

        def seat_reserved(evt: BusSeatReserved, uow: UnitOfWork) -> None:
            pass

        bus = MessageBus(
            UnitOfWork(), {BusReserveSeat: reserve_seat}, {BusSeatReserved: [seat_reserved]}
        )
        command = BusReserveSeat("1", "A1", "customer-1")

        def step() -> int:
            for _ in range(BATCH):
                bus.handle(command)
            return BATCH

        yield repeat(step)

    return contender


# --- the slots ---------------------------------------------------------------------------------


def slots() -> list[Slot]:
    return [
        Pair("seq", "SQLite FULL, 1 caller: 1-event invoke / raw sqlite3 1 row/tx",
             ("tidings", "raw sqlite3"), tidings_invoke(1), raw_sqlite(1), Floor(">=", 0.85)),
        Pair("ideal", "yardstick: hand-written minimal invoke / raw sqlite3 1 row/tx",
             ("minimal invoke", "raw sqlite3"), ideal_invoke(), raw_sqlite(1)),
        Pair("many", "SQLite FULL, 16 callers / eventsourcing 16 threads",
             ("tidings", "eventsourcing"), tidings_invoke(16), eventsourcing_threads(16),
             Floor(">=", 4.0), block=0.2),
        Pair("batch", "SQLite FULL, app.append 1,000 / raw 1,000 rows/tx",
             ("tidings", "raw sqlite3"), tidings_append(1000), raw_sqlite(1000), Floor(">=", 0.5)),
        Pair("memory", "memory invoke + 1 event / minimal bus (time per dispatch)",
             ("tidings", "bus"), tidings_memory(), bus_memory(), Floor("<=", 4.0), unit="µs",
             kind="memory"),
        Pair("minimal", "yardstick: hand-written minimal in-memory invoke / minimal bus",
             ("minimal invoke", "bus"), minimal_memory(), bus_memory(), unit="µs", kind="memory"),
    ]  # fmt: skip


if __name__ == "__main__":
    args = parser(__doc__, rounds=7, seconds=0.6).parse_args()
    if args.quick:
        args.rounds, args.seconds, args.memory_seconds = 3, 0.3, 0.2
    head = header(["msgspec", "eventsourcing"], [f"sqlite    {sqlite3.sqlite_version}"])
    main(slots(), args, head)
