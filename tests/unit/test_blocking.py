"""BlockingApp: many threads at once on SQLite and PostgreSQL, each result to its own caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tidings import App, BlockingApp, Command, Context, Event, Refused
from tidings.delivery.policy import RetryPolicy
from tidings.errors import StoreClosed

THREADS = 16
CALLS = 25


class Reserve(Command):
    caller: int
    n: int


class Reserved(Event):
    caller: int
    n: int


class Stall(Command):
    pass


class Charge(Command):
    amount: int


def build(store: object) -> App:
    app = App("blocking", store=store)  # type: ignore[arg-type]
    stalled = asyncio.Event()

    @app.command
    async def reserve(cmd: Reserve, ctx: Context) -> str:
        if cmd.n % 5 == 4:
            raise Refused(f"caller {cmd.caller} call {cmd.n} refused", code="odd")
        if cmd.n % 7 == 6:
            raise ValueError(f"caller {cmd.caller} call {cmd.n} broke")
        ctx.publish(Reserved(cmd.caller, cmd.n), stream=f"caller-{cmd.caller}")
        ctx.put("last", str(cmd.caller), cmd.n)
        return f"{cmd.caller}:{cmd.n}"

    @app.command
    async def stall(cmd: Stall, ctx: Context) -> None:
        await stalled.wait()

    @app.command
    async def charge(cmd: Charge, ctx: Context) -> int:
        if cmd.amount < 0:
            raise Refused("negative amount", code="negative")
        return cmd.amount * 2

    @app.subscriber("flaky", policy=RetryPolicy(max_attempts=1))
    async def flaky(event: Reserved, ctx: Context) -> None:
        if event.n == 0:
            raise ConnectionError(f"caller {event.caller} unreachable")

    return app


def hammer(blocking_app: BlockingApp) -> None:
    """THREADS threads invoke CALLS commands each; every one gets its own answer."""
    barrier = threading.Barrier(THREADS)

    def caller(who: int) -> list[str]:
        barrier.wait(timeout=10)
        seen = []
        for n in range(CALLS):
            try:
                seen.append(blocking_app.invoke(Reserve(who, n)))
            except Refused as refused:
                assert refused.code == "odd"
                seen.append(f"refused {refused.reason}")
            except ValueError as exc:
                seen.append(f"error {exc}")
        return seen

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(caller, range(THREADS), timeout=120))
    for who, seen in enumerate(results):
        expected = []
        for n in range(CALLS):
            if n % 5 == 4:
                expected.append(f"refused caller {who} call {n} refused")
            elif n % 7 == 6:
                expected.append(f"error caller {who} call {n} broke")
            else:
                expected.append(f"{who}:{n}")
        assert seen == expected
    for who in range(THREADS):
        events = blocking_app.read_stream(f"caller-{who}")
        ok = [n for n in range(CALLS) if n % 5 != 4 and n % 7 != 6]
        assert [e.message.n for e in events] == ok
        assert blocking_app.get("last", str(who)) == ok[-1]


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[BlockingApp]:
    with BlockingApp(build(f"sqlite:///{tmp_path / 'app.db'}"), worker=True) as blocking_app:
        yield blocking_app


def test_many_threads_on_sqlite_each_get_their_own_result(sqlite_app: BlockingApp) -> None:
    hammer(sqlite_app)


def test_many_threads_on_postgres_each_get_their_own_result(
    postgres_url: str, pg_schema: str
) -> None:
    from tidings.backends.postgres import PostgresStore

    with BlockingApp(build(PostgresStore(postgres_url, schema=pg_schema))) as blocking_app:
        hammer(blocking_app)


def test_sent_commands_and_their_outcomes_block_until_known(sqlite_app: BlockingApp) -> None:
    tickets = [sqlite_app.send(Charge(n - 2)) for n in range(5)]
    outcomes = [t.outcome(timeout=10) for t in tickets]
    assert [o.status for o in outcomes] == ["refused"] * 2 + ["succeeded"] * 3
    assert [t.result(timeout=10) for t in tickets[2:]] == [0, 2, 4]
    with pytest.raises(Refused, match="negative amount") as refused:
        tickets[0].result(timeout=10)
    assert refused.value.code == "negative"


def test_dead_letters_are_listed_and_skipped_by_blocking_calls(sqlite_app: BlockingApp) -> None:
    sqlite_app.invoke(Reserve(7, 0))
    sqlite_app.publish(Reserved(8, 1), stream="caller-8")
    deadline = time.monotonic() + 10
    while not sqlite_app.dead_letters.list() and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    (dead,) = sqlite_app.dead_letters.list()
    shown = sqlite_app.dead_letters.show(dead.id)
    assert shown.held.error is not None and "caller 7 unreachable" in shown.held.error
    assert sqlite_app.dead_letters.skip(dead.id).id == dead.id
    deadline = time.monotonic() + 10
    while sqlite_app.dead_letters.list() and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    assert sqlite_app.dead_letters.list() == []


def test_a_call_that_overruns_its_timeout_is_cancelled_and_the_app_goes_on(
    sqlite_app: BlockingApp,
) -> None:
    with pytest.raises(TimeoutError, match=r"within 0.2s"):
        sqlite_app.within(0.2).invoke(Stall())
    assert sqlite_app.invoke(Charge(21)) == 42


def test_closing_is_idempotent_and_later_calls_say_it_is_closed(tmp_path: Path) -> None:
    blocking_app = BlockingApp(build(f"sqlite:///{tmp_path / 'app.db'}"))
    assert blocking_app.invoke(Charge(1)) == 2
    blocking_app.close()
    blocking_app.close()
    assert blocking_app.closed and not blocking_app.app.is_open
    with pytest.raises(StoreClosed, match="closed"):
        blocking_app.invoke(Charge(1))


def test_a_blocking_call_from_the_apps_own_loop_raises_instead_of_hanging(
    tmp_path: Path,
) -> None:
    with BlockingApp(build(f"sqlite:///{tmp_path / 'app.db'}")) as blocking_app:

        async def inside() -> object:
            return blocking_app.invoke(Charge(1))

        with pytest.raises(StoreClosed, match="await the App's async method"):
            blocking_app.run(inside())


def test_a_calls_own_timeout_extends_how_long_it_is_waited_for(tmp_path: Path) -> None:
    with BlockingApp(build(f"sqlite:///{tmp_path / 'app.db'}"), timeout=0.2) as blocking_app:
        ticket = blocking_app.send(Charge(1))  # no worker: it stays pending
        started = time.monotonic()
        assert ticket.outcome(0.5).status == "pending"  # by position: waited 0.5 s, not cut at 0.2
        assert ticket.outcome(timeout=0.5).status == "pending"
        assert time.monotonic() - started >= 1.0
