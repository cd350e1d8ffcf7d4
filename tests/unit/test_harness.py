"""The harness runs the App it is given on its own store and clock — even an App built at module
level on a SQLite file — or refuses one it cannot."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tidings import App, Command, ConfigurationError, Decider, Event, Refused
from tidings.testing import Harness
from tidings.workflow import Step, Workflow


class Book(Command, type_name="h.Book"):
    seat: str


class Booked(Event, type_name="h.Booked"):
    seat: str


class Remind(Command, type_name="h.Remind"):
    seat: str


class Booking(msgspec.Struct):
    reminded: bool = False


def decide(cmd: Book, taken: frozenset[str]) -> list[Event]:
    if cmd.seat in taken:
        raise Refused(f"seat {cmd.seat} is taken", code="taken")
    return [Booked(seat=cmd.seat)]


def production_app(path: Path) -> App:
    """As the README writes it: one App on a SQLite file, wired at import."""
    app = App("hall", store=f"sqlite:///{path}")
    app.decider(
        Decider(
            decide=decide,
            evolve=lambda taken, e: taken | {e.seat},
            initial=frozenset(),
            stream=lambda cmd: "hall",
        ),
        Book,
    )
    reminders = Workflow("reminders", state=Booking, key=lambda e: e.seat)

    @reminders.on(Booked, starts=True)
    def booked(state: Booking, event: Booked, wf: Step) -> Booking:
        wf.timeout("remind", after=30)
        return state

    @reminders.on_timeout("remind")
    def remind(state: Booking, timeout: object, wf: Step) -> Booking:
        wf.send(Remind(seat=wf.key))
        wf.complete()
        return Booking(reminded=True)

    app.workflow(reminders)

    @app.command
    def send_reminder(cmd: Remind, ctx: object) -> str:
        return f"reminded {cmd.seat}"

    return app


async def test_an_app_on_a_sqlite_file_runs_on_the_harness_store_and_clock(tmp_path: Path) -> None:
    path = tmp_path / "hall.db"
    app = production_app(path)
    sqlite_store = app.store
    async with Harness().run(app) as harness:
        assert app.store is harness.store
        await app.invoke(Book(seat="A1"))
        await harness.settle()
        assert await harness.messages(Remind) == []
        await harness.advance(31)  # the clock the App's timeouts are due on
        assert await harness.messages(Remind) == [Remind(seat="A1")]
        assert not await harness.dead_letters()
    assert app.store is sqlite_store  # given back
    assert not path.exists()  # nothing was written to the App's own file


async def test_each_run_starts_from_an_empty_store(tmp_path: Path) -> None:
    app = production_app(tmp_path / "hall.db")
    async with Harness().run(app):
        await app.invoke(Book(seat="A1"))
        with pytest.raises(Refused):
            await app.invoke(Book(seat="A1"))
    async with Harness().run(app) as harness:
        # The decider kept the state of "hall" from the first run's store: it is forgotten.
        await app.invoke(Book(seat="A1"))
        assert await harness.messages(Booked) == [Booked(seat="A1")]


async def test_an_open_app_is_refused_and_keeps_its_store(tmp_path: Path) -> None:
    path = tmp_path / "hall.db"
    app = production_app(path)
    async with app:
        store = app.store
        with pytest.raises(ConfigurationError) as error:
            Harness().run(app)
        assert "is open on its own store" in str(error.value)
        assert str(path) in str(error.value)
        assert app.store is store
        with pytest.raises(ConfigurationError, match="close it"):
            app.store = Harness().store
        assert await app.read_all() == []
