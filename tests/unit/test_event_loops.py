"""A SQLite store belongs to the event loop that opened it: used from another loop, in this thread
or in another, it says so instead of writing from two loops at once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tidings import App, Command, Decider, Event
from tidings.errors import StoreError, StoreUnavailable


class Reserve(Command, type_name="loops.Reserve"):
    seat: str


class Reserved(Event, type_name="loops.Reserved"):
    seat: str


def cinema(path: Path) -> App:
    app = App("loops", store=f"sqlite:///{path}")
    app.decider(
        Decider[int](
            decide=lambda cmd, n: [Reserved(seat=cmd.seat)],
            evolve=lambda n, e: n + 1,
            initial=0,
            stream=lambda cmd: f"seat-{cmd.seat}",
        ),
        Reserve,
    )
    return app


ANOTHER_LOOP = "opened in another event loop"


def test_a_store_used_from_a_later_loop_in_the_same_thread_says_so(tmp_path: Path) -> None:
    app = cinema(tmp_path / "l.db")

    async def first() -> None:
        await app.open()
        await app.invoke(Reserve(seat="A1"))

    async def second() -> None:
        with pytest.raises(StoreError, match=ANOTHER_LOOP):
            await app.invoke(Reserve(seat="A2"))  # a decided invoke
        with pytest.raises(StoreError, match=ANOTHER_LOOP):
            await app.publish(Reserved(seat="A3"))  # any other commit

    asyncio.run(first())
    asyncio.run(second())

    async def check() -> list[str]:
        app2 = cinema(tmp_path / "l.db")
        async with app2:
            return [e.stream for e in await app2.read_all()]

    assert asyncio.run(check()) == ["seat-A1"]


def test_a_store_used_from_another_thread_s_loop_while_its_own_runs_says_so(
    tmp_path: Path,
) -> None:
    app = cinema(tmp_path / "l.db")
    errors: list[BaseException] = []

    def elsewhere() -> None:
        async def use() -> None:
            await app.invoke(Reserve(seat="B1"))

        try:
            asyncio.run(use())
        except BaseException as exc:
            errors.append(exc)

    async def main() -> None:
        async with app:
            await app.invoke(Reserve(seat="A1"))
            thread = threading.Thread(target=elsewhere)
            thread.start()
            await asyncio.to_thread(thread.join, 10)
            assert not thread.is_alive()
            await app.invoke(Reserve(seat="A2"))  # its own loop still commits
            assert [e.stream for e in await app.read_all()] == ["seat-A1", "seat-A2"]

    asyncio.run(main())
    assert len(errors) == 1 and ANOTHER_LOOP in str(errors[0]), errors


def test_threads_each_running_their_own_loop_on_one_app_fail_at_once(tmp_path: Path) -> None:
    """A threaded web server calling asyncio.run(app.invoke(...)) per request: one thread's loop
    gets the App, the others a clear StoreError — none hangs."""
    app = cinema(tmp_path / "l.db")
    results: dict[int, object] = {}
    start = threading.Barrier(4)

    def request(n: int) -> None:
        start.wait(5)
        try:
            results[n] = asyncio.run(app.invoke(Reserve(seat=f"A{n}")))
        except BaseException as exc:
            results[n] = exc

    threads = [threading.Thread(target=request, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    assert len(results) == 4 and len(errors) == 3, results
    for error in errors:
        assert isinstance(error, StoreError), repr(error)
        assert ANOTHER_LOOP in str(error) and "App 'loops'" in str(error)

    async def check() -> int:
        async with cinema(tmp_path / "l.db") as fresh:
            return len(await fresh.read_all())

    assert asyncio.run(check()) == 1  # only the request that had the App wrote


def test_a_later_asyncio_run_says_to_close_the_app_or_works_after_closing(tmp_path: Path) -> None:
    app = cinema(tmp_path / "l.db")
    asyncio.run(app.invoke(Reserve(seat="A1")))  # opened, never closed
    with pytest.raises(StoreError, match="has ended") as error:
        asyncio.run(app.invoke(Reserve(seat="A2")))
    assert "async with app" in str(error.value)

    closed = cinema(tmp_path / "m.db")

    async def request(seat: str) -> None:
        async with closed:
            await closed.invoke(Reserve(seat=seat))

    asyncio.run(request("B1"))
    asyncio.run(request("B2"))  # closed at the end of the first loop: opens in the next

    async def streams() -> list[str]:
        async with closed:
            return [e.stream for e in await closed.read_all()]

    assert asyncio.run(streams()) == ["seat-B1", "seat-B2"]


async def test_an_unreachable_postgresql_fails_at_once_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("psycopg_pool")
    app = App("loops", store="postgresql://postgres@127.0.0.1:1/test")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreUnavailable) as error:
        await asyncio.wait_for(app.open(), 10)
    assert loop.time() - started < 5
    message = str(error.value)
    assert "127.0.0.1:1" in message and "\n" not in message
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]
