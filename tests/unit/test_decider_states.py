"""A decider keeps the states it committed and decides on them (or on "new stream") without reading;
the append confirms the state, and a refusal or a no-op decided on it is confirmed by a read.

Every test has a second App on the same SQLite file change the stream behind the first App's back,
which is what another process does.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tidings import App, Command, Decider, Event, Refused, WrongExpectedVersion
from tidings.backends.sqlite import SqliteStore
from tidings.decider import StreamStates
from tidings.errors import InvalidName, StoreError


class Reserve(Command, type_name="states.Reserve"):
    screening: str
    seat: str


class Release(Command, type_name="states.Release"):
    screening: str
    seat: str


class Reserved(Event, type_name="states.Reserved"):
    seat: str


class Released(Event, type_name="states.Released"):
    seat: str


def decide(command: Reserve | Release, taken: set[str]) -> list[Event]:
    if isinstance(command, Reserve):
        if command.seat in taken:
            raise Refused(f"{command.seat} is taken", code="taken")
        return [Reserved(seat=command.seat)]
    return [Released(seat=command.seat)] if command.seat in taken else []


def evolve(taken: set[str], event: Reserved | Released) -> set[str]:
    # Changes the state in place, the way a careless evolve does: the kept states must survive it.
    if isinstance(event, Reserved):
        taken.add(event.seat)
    else:
        taken.discard(event.seat)
    return taken


screening = Decider[set[str]](
    decide=decide, evolve=evolve, initial=set, stream=lambda c: f"screening-{c.screening}"
)


def cinema(path: Path, *, cache: int = 4096, retry_on_conflict: int = 5) -> App:
    app = App("states", store=SqliteStore(path))
    app.decider(screening, Reserve, Release, cache=cache, retry_on_conflict=retry_on_conflict)
    return app


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[tuple[App, App]]:
    here, there = cinema(tmp_path / "s.db"), cinema(tmp_path / "s.db")
    async with here, there:
        yield here, there


async def seats(app: App, screening_id: str) -> set[str]:
    state, _ = await app.load(f"screening-{screening_id}", evolve, set)
    return state


async def versions(app: App, stream: str) -> list[int]:
    return [e.stream_position for e in await app.read_stream(stream)]


async def test_sequential_invokes_on_one_stream_append_at_the_right_versions(
    apps: tuple[App, App],
) -> None:
    here, _ = apps
    for seat in ("A1", "A2", "A3"):
        await here.invoke(Reserve(screening="1", seat=seat))
    with pytest.raises(Refused, match="A2 is taken"):
        await here.invoke(Reserve(screening="1", seat="A2"))
    assert await versions(here, "screening-1") == [1, 2, 3]
    assert await seats(here, "1") == {"A1", "A2", "A3"}


async def test_a_stream_written_elsewhere_is_loaded_when_the_append_conflicts(
    apps: tuple[App, App],
) -> None:
    here, there = apps
    await here.invoke(Reserve(screening="1", seat="A1"))  # kept: {A1} at version 1
    await there.invoke(Reserve(screening="1", seat="B1"))  # here does not know
    await here.invoke(Reserve(screening="1", seat="C1"))
    with pytest.raises(Refused, match="B1 is taken"):
        await here.invoke(Reserve(screening="1", seat="B1"))
    assert await versions(here, "screening-1") == [1, 2, 3]
    assert await seats(there, "1") == {"A1", "B1", "C1"}


async def test_an_existing_stream_this_process_never_saw_is_not_taken_for_new(
    tmp_path: Path,
) -> None:
    # retry_on_conflict=0: the conflict of a state assumed is not a retry of the caller's.
    here = cinema(tmp_path / "s.db", retry_on_conflict=0)
    there = cinema(tmp_path / "s.db")
    async with here, there:
        await there.invoke(Reserve(screening="1", seat="A1"))
        with pytest.raises(Refused, match="A1 is taken"):
            await here.invoke(Reserve(screening="1", seat="A1"))
        await here.invoke(Reserve(screening="1", seat="A2"))
        assert await versions(here, "screening-1") == [1, 2]


async def test_a_refusal_decided_on_a_kept_state_is_confirmed_first(
    apps: tuple[App, App],
) -> None:
    here, there = apps
    await here.invoke(Reserve(screening="1", seat="A1"))  # kept: {A1}
    await there.invoke(Release(screening="1", seat="A1"))  # A1 is free again
    # The kept state says A1 is taken; the store says it is free.
    await here.invoke(Reserve(screening="1", seat="A1"))
    assert await versions(here, "screening-1") == [1, 2, 3]
    assert await seats(there, "1") == {"A1"}


async def test_a_no_op_decided_on_a_kept_state_is_confirmed_first(apps: tuple[App, App]) -> None:
    here, there = apps
    await here.invoke(Reserve(screening="1", seat="A1"))
    await here.invoke(Release(screening="1", seat="A1"))  # kept: {} at version 2
    await there.invoke(Reserve(screening="1", seat="A1"))  # taken again, elsewhere
    # The kept state says there is nothing to release; the store says there is.
    assert await here.invoke(Release(screening="1", seat="A1")) == [Released(seat="A1")]
    assert await seats(there, "1") == set()
    assert await versions(here, "screening-1") == [1, 2, 3, 4]


async def test_a_commit_that_fails_leaves_no_state_behind(apps: tuple[App, App]) -> None:
    here, there = apps
    await here.invoke(Reserve(screening="1", seat="A1"))
    await there.invoke(Reserve(screening="1", seat="B1"))
    # Decided on {A1} at version 1, the append conflicts; the reload must not see B2 (decided on
    # the kept state, never committed) even though evolve changes states in place.
    await here.invoke(Reserve(screening="1", seat="B2"))
    await here.invoke(Reserve(screening="1", seat="B3"))
    assert await seats(here, "1") == {"A1", "B1", "B2", "B3"}
    assert await versions(there, "screening-1") == [1, 2, 3, 4]


async def test_cache_zero_loads_every_time(tmp_path: Path) -> None:
    here = cinema(tmp_path / "s.db", cache=0, retry_on_conflict=0)
    there = cinema(tmp_path / "s.db")
    async with here, there:
        await here.invoke(Reserve(screening="1", seat="A1"))
        await there.invoke(Release(screening="1", seat="A1"))
        await here.invoke(Reserve(screening="1", seat="A1"))
        assert await versions(here, "screening-1") == [1, 2, 3]


async def test_the_states_kept_are_bounded(tmp_path: Path) -> None:
    app = cinema(tmp_path / "s.db", cache=2)
    async with app:
        for n in range(5):
            await app.invoke(Reserve(screening=str(n), seat="A1"))
        # The oldest were dropped: deciding on them again needs the store, and still refuses.
        with pytest.raises(Refused):
            await app.invoke(Reserve(screening="0", seat="A1"))
        assert await versions(app, "screening-0") == [1]


class Open(Command, type_name="states.Open"):
    account: str


class Deposit(Command, type_name="states.Deposit"):
    account: str
    amount: int


class Opened(Event, type_name="states.Opened"):
    account: str


class Deposited(Event, type_name="states.Deposited"):
    amount: int


def decide_account(command: Open | Deposit, balance: int | None) -> list[Event]:
    if isinstance(command, Open):
        return [] if balance is not None else [Opened(account=command.account)]
    # Written for accounts that exist: on the empty state this fails, and not with Refused.
    return [Deposited(amount=command.amount)] if balance + command.amount >= 0 else []  # type: ignore[operator]


def evolve_account(balance: int | None, event: Opened | Deposited) -> int:
    return 0 if isinstance(event, Opened) else (balance or 0) + event.amount


account = Decider[int | None](
    decide=decide_account, evolve=evolve_account, initial=None, stream=lambda c: c.account
)


async def test_an_error_decided_on_an_assumed_state_is_not_given_before_the_stream_is_read(
    tmp_path: Path,
) -> None:
    def bank(path: Path) -> App:
        app = App("bank", store=SqliteStore(path))
        app.decider(account, Open, Deposit)
        return app

    here, there = bank(tmp_path / "b.db"), bank(tmp_path / "b.db")
    async with here, there:
        await there.invoke(Open(account="acct-1"))
        # `here` never saw acct-1: the empty state it assumes makes decide raise TypeError.
        assert await here.invoke(Deposit(account="acct-1", amount=5)) == [Deposited(amount=5)]
        # On a stream that really is empty, the same error is the answer.
        with pytest.raises(TypeError):
            await here.invoke(Deposit(account="acct-2", amount=5))
        assert [e.stream_position for e in await here.read_stream("acct-2")] == []


def test_kept_states_stay_within_the_limit_dropping_the_oldest_first() -> None:
    states: StreamStates[int] = StreamStates(16, lambda events, state: state + len(events))
    for n in range(100):
        assert states.take(f"s-{n}") is None
        states.put(f"s-{n}", 0, 0, ["e"] * n)
        assert len(states) <= 16
    assert states.take("s-99") == (99, 99)  # the newest is kept, folded when taken
    assert states.take("s-50") is None  # an old one is gone
    states.put("s-98", 7, 3)  # put again: now the newest, so it outlives older ones
    n = 100
    while "s-97" in states:
        states.put(f"s-{n}", 0, 0)
        n += 1
        assert n < 120
    assert states.take("s-98") == (7, 3)


async def test_sent_decider_commands_are_decided_by_the_worker_on_the_stream_as_stored(
    apps: tuple[App, App],
) -> None:
    here, there = apps
    await here.invoke(Reserve(screening="1", seat="A1"))  # here keeps {A1}
    first = await there.send(Reserve(screening="1", seat="B1"))
    taken = await there.send(Reserve(screening="1", seat="A1"))
    nothing = await there.send(Release(screening="1", seat="Z9"))
    await there.worker(seed=1).drain()
    assert await first.result(timeout=0) == [{"seat": "B1"}]  # the events, as JSON
    with pytest.raises(Refused, match="A1 is taken"):
        await taken.result(timeout=0)
    assert await nothing.result(timeout=0) == []
    # Here still keeps {A1} at version 1: its next invoke conflicts, loads, and sees B1.
    with pytest.raises(Refused, match="B1 is taken"):
        await here.invoke(Reserve(screening="1", seat="B1"))
    await here.invoke(Reserve(screening="1", seat="C1"))
    assert await versions(here, "screening-1") == [1, 2, 3]
    assert await seats(here, "1") == {"A1", "B1", "C1"}


# --- what the SQLite store itself knows: each stream's version and the log's last position ------


def log_rows(path: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT stream, stream_position, global_position FROM tidings_log "
            "ORDER BY global_position"
        ).fetchall()


def assert_log_whole(path: Path) -> None:
    """Global positions 1..n, and each stream's positions 1..k, in the order they were written."""
    rows = log_rows(path)
    assert [g for _, _, g in rows] == list(range(1, len(rows) + 1))
    seen: dict[str, int] = {}
    for stream, position, _ in rows:
        assert position == seen.get(stream, 0) + 1, (stream, position)
        seen[stream] = position


async def test_versions_known_here_that_another_app_moved_on_neither_refuse_nor_collide(
    tmp_path: Path,
) -> None:
    """The store remembers each stream's version and the log's last position from its own
    commits, and does not ask the file whether another process wrote since. An append planned on
    what it remembers either collides with the other's rows (and is planned again on what is
    stored) or, when the version expected is not the one remembered, is checked against the
    file before it is refused."""
    path = tmp_path / "shared.db"
    here, there = App("here", store=SqliteStore(path)), App("there", store=SqliteStore(path))
    async with here, there:
        await here.append("s", [Reserved(seat="1")], expected_version=0)  # here: s at 1
        await there.append("s", [Reserved(seat="2"), Reserved(seat="3")], expected_version=1)
        await there.append("t", [Reserved(seat="4")])

        # Expected 3, remembered 1: the file says 3, so it is not refused.
        done = await here.append("s", [Reserved(seat="5")], expected_version=3)
        assert (done.stream, done.version, done.global_position) == ("s", 4, 5)
        # A stale expectation is refused with the version stored, not the one remembered.
        with pytest.raises(WrongExpectedVersion) as refused:
            await here.append("s", [Reserved(seat="x")], expected_version=1)
        assert (refused.value.expected, refused.value.actual) == (1, 4)

        await there.append("s", [Reserved(seat="6")])
        # Remembered 4 and expected 4, stored 5: a collision, then a refusal saying 5.
        with pytest.raises(WrongExpectedVersion) as refused:
            await here.append("s", [Reserved(seat="y")], expected_version=4)
        assert refused.value.actual == 5
        await there.append("t", [Reserved(seat="7")])
        # At any version, and to a new stream, after the other app took the next positions.
        done = await here.append("s", [Reserved(seat="8")])
        assert (done.version, done.global_position) == (6, 8)
        await there.append("u", [Reserved(seat="9")])
        done = await here.append("v", [Reserved(seat="10")], expected_version=0)
        assert (done.version, done.global_position) == (1, 10)
        # A batch of several events, after the other app wrote again.
        await there.append("v", [Reserved(seat="11")])
        done = await here.append("v", [Reserved(seat="12"), Reserved(seat="13")])
        assert (done.version, done.global_position) == (4, 13)
        # An append of nothing inserts no row that could collide: it reads where the stream is.
        await there.append("s", [Reserved(seat="14")])
        done = await here.append("s", [])
        assert (done.version, done.global_position) == (7, 14)
        await there.append("t", [Reserved(seat="15")])
        done = await here.append("s", [], expected_version=7)
        assert (done.version, done.global_position) == (7, 15)
    assert_log_whole(path)
    assert [row[:2] for row in log_rows(path) if row[0] == "s"] == [("s", n) for n in range(1, 8)]


async def test_an_append_the_file_refuses_is_told_once_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    """A lone append takes the short path; when SQLite fails it there (here a trigger that
    refuses one stream's rows, or one that names a missing table), it is rolled back and the
    group path tells the caller, as a StoreError, with nothing committed, and the store goes on."""
    path = tmp_path / "refusing.db"
    app = App("refusing", store=SqliteStore(path))
    async with app:
        await app.append("fine", [Reserved(seat="1")])  # the store now knows the top: short path
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER no_bad BEFORE INSERT ON tidings_log WHEN NEW.stream = 'bad' "
                "BEGIN SELECT RAISE(ABORT, 'bad streams are refused'); END"
            )
        with pytest.raises(StoreError, match="bad streams are refused"):
            await app.append("bad", [Reserved(seat="2")])
        with sqlite3.connect(path) as conn:
            # (SQLite compiles a trigger with the statement that fires it: every insert fails)
            conn.executescript(
                "DROP TRIGGER no_bad; CREATE TRIGGER broken BEFORE INSERT ON tidings_log "
                "BEGIN INSERT INTO no_such_table VALUES (1); END;"
            )
        with pytest.raises(StoreError, match="no_such_table"):
            await app.append("broken", [Reserved(seat="3")], expected_version=0)
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TRIGGER broken")
        done = await app.append("fine", [Reserved(seat="4")], expected_version=1)
        assert (done.version, done.global_position) == (2, 2)
    assert [row[:2] for row in log_rows(path)] == [("fine", 1), ("fine", 2)]


async def test_each_command_is_decided_once_whether_it_appends_refuses_or_does_nothing(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    def counted(command: Reserve | Release, taken: set[str]) -> list[Event]:
        calls.append(f"{type(command).__name__} {command.seat}")
        return decide(command, taken)

    app = App("states", store=SqliteStore(tmp_path / "s.db"))
    app.decider(
        Decider[set[str]](
            decide=counted, evolve=evolve, initial=set, stream=lambda c: f"screening-{c.screening}"
        ),
        Reserve,
        Release,
    )
    async with app:
        await app.invoke(Reserve(screening="1", seat="A1"))  # a new stream
        await app.invoke(Reserve(screening="1", seat="A2"))  # a kept state
        with pytest.raises(Refused):
            await app.invoke(Reserve(screening="1", seat="A1"))  # refused, then confirmed
        assert await app.invoke(Release(screening="1", seat="B9")) == []  # nothing to do
        assert calls == ["Reserve A1", "Reserve A2", "Reserve A1", "Release B9"]
        assert await versions(app, "screening-1") == [1, 2]
        # The refusal and the no-op, confirmed by a read, left the state kept as it was.
        await app.invoke(Reserve(screening="1", seat="A3"))
        assert await versions(app, "screening-1") == [1, 2, 3]


class Odd(Command, type_name="states.Odd"):
    stream: str
    give_a_command: bool = False


def decide_odd(command: Odd, state: None) -> list[Any]:
    return [Reserve(screening="x", seat="A1")] if command.give_a_command else [Reserved(seat="A1")]


async def test_what_a_decider_gets_wrong_is_told_and_nothing_is_committed(tmp_path: Path) -> None:
    app = App("states", store=SqliteStore(tmp_path / "s.db"))
    app.decider(
        Decider[None](
            decide=decide_odd, evolve=lambda s, e: s, initial=None, stream=lambda c: c.stream
        ),
        Odd,
    )
    async with app:
        with pytest.raises(TypeError, match=r"ctx\.append takes events, got Reserve"):
            await app.invoke(Odd(stream="odd-1", give_a_command=True))
        with pytest.raises(InvalidName, match="stream name '' is not allowed"):
            await app.invoke(Odd(stream=""))
        assert await app.store.last_position() == 0
        assert await app.invoke(Odd(stream="odd-1")) == [Reserved(seat="A1")]
        assert await versions(app, "odd-1") == [1]


async def test_a_decided_invoke_wakes_this_process_s_workers_and_records_its_causes(
    tmp_path: Path,
) -> None:
    app = cinema(tmp_path / "s.db")
    async with app:
        wakeup = asyncio.Event()  # what a worker's subscription waits on between polls
        app.committer.add_wakeup(wakeup)
        await app.invoke(Reserve(screening="1", seat="A1"), correlation_id="order-7")
        assert wakeup.is_set()
        (stored,) = await app.read_stream("screening-1")
        assert stored.correlation_id == "order-7"
        assert stored.causation_id is not None and stored.causation_id < stored.id
