"""A SQLite store belongs to the event loop that opened it: used from another loop, in this thread
or in another, it says so instead of writing from two loops at once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tidings import App, Command, Decider, Event
from tidings.errors import StoreError


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
