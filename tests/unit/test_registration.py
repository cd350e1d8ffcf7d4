"""Handlers register wherever a user defines them: local classes, postponed annotations, or
types named in the decorator."""

from __future__ import annotations

import pytest

from tidings import App, Command, ConfigurationError, Context, Event


async def test_local_classes_are_found_under_postponed_annotations() -> None:
    class ReserveSeat(Command):
        seat: str

    class SeatReserved(Event):
        seat: str

    app = App("local")
    seen: list[str] = []

    @app.command
    async def reserve(cmd: ReserveSeat, ctx: Context) -> str:
        ctx.publish(SeatReserved(seat=cmd.seat))
        return cmd.seat

    @app.subscriber("chart")
    async def chart(event: SeatReserved, ctx: Context) -> None:
        seen.append(event.seat)

    async with app:
        assert await app.invoke(ReserveSeat(seat="A1")) == "A1"
        await app.worker().drain()
    assert seen == ["A1"]
    assert app.subscribers["chart"].events == (SeatReserved,)


def test_the_decorator_with_options_resolves_local_classes_too() -> None:
    class Ping(Command):
        n: int

    app = App("local")

    @app.command(retry_on_conflict=2)
    def ping(cmd: Ping, ctx: Context) -> int:
        return cmd.n

    assert app.command_handlers[Ping].retry_on_conflict == 2


async def test_message_types_can_be_named_in_the_decorator() -> None:
    class ReserveSeat(Command):
        seat: str

    class SeatReserved(Event):
        seat: str

    class SeatReleased(Event):
        seat: str

    def make_app() -> App:
        app = App("explicit")

        # The classes are not in this function's namespace: only the decorator can name them.
        @app.command(ReserveSeat)
        async def reserve(cmd: ReserveSeat, ctx: Context) -> str:
            ctx.publish(SeatReserved(seat=cmd.seat))
            ctx.publish(SeatReleased(seat=cmd.seat))
            return cmd.seat

        @app.subscriber("email", SeatReserved)
        async def email(event: SeatReserved, ctx: Context) -> None:
            seen.append(("email", event.seat))

        @app.subscriber("chart", (SeatReserved, SeatReleased))
        async def chart(event: SeatReserved | SeatReleased, ctx: Context) -> None:
            seen.append((type(event).__name__, event.seat))

        return app

    seen: list[tuple[str, str]] = []
    app = make_app()
    assert set(app.command_handlers) == {ReserveSeat}
    assert app.subscribers["chart"].events == (SeatReserved, SeatReleased)
    async with app:
        assert await app.invoke(ReserveSeat(seat="B2")) == "B2"
        await app.worker().drain()
    assert sorted(seen) == [("SeatReleased", "B2"), ("SeatReserved", "B2"), ("email", "B2")]


def test_an_unresolvable_annotation_says_how_to_name_the_type() -> None:
    app = App("local")

    def register() -> None:
        @app.command
        async def reserve(cmd: NowhereToBeFound, ctx: Context) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError) as error:
        register()
    assert "NowhereToBeFound" in str(error.value)
    assert "@app.command(ReserveSeat)" in str(error.value)


def test_the_types_named_in_a_decorator_are_checked() -> None:
    class SeatReserved(Event):
        seat: str

    class ReserveSeat(Command):
        seat: str

    app = App("local")
    with pytest.raises(ConfigurationError, match="is not a Command or Event class"):
        app.command(str)
    with pytest.raises(ConfigurationError, match="which is an Event"):

        @app.command(SeatReserved)  # type: ignore[arg-type]
        async def wrong(event: SeatReserved, ctx: Context) -> None: ...

    with pytest.raises(ConfigurationError, match="which is a Command"):

        @app.subscriber("email", (SeatReserved, ReserveSeat))  # type: ignore[arg-type]
        async def also_wrong(event: SeatReserved, ctx: Context) -> None: ...

    assert not app.command_handlers and not app.subscribers
