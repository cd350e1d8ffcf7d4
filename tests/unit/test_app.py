"""The public API of DESIGN.md §4, as a user meets it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tidings import (
    App,
    Command,
    ConfigurationError,
    Context,
    Decider,
    DuplicateHandler,
    Event,
    HandlerNotFound,
    Refused,
    WrongExpectedVersion,
)
from tidings.backends.memory import MemoryStore
from tidings.backends.sqlite import SqliteStore
from tidings.errors import InvalidName, MessageTooLarge
from tidings.records import Appended, Transaction


class ReserveSeat(Command):
    screening_id: str
    seat: str


class SeatReserved(Event):
    screening_id: str
    seat: str
    reservation_id: str


class IssueReceipt(Command):
    reservation_id: str


def make_app() -> App:
    app = App("cinema", store="memory://")

    @app.command
    async def reserve_seat(cmd: ReserveSeat, ctx: Context) -> str:
        taken = {e.message.seat for e in await ctx.read_stream(f"screening-{cmd.screening_id}")}
        if cmd.seat in taken:
            raise Refused("seat taken", code="seat-taken")
        reservation_id = f"r-{cmd.seat}"
        ctx.publish(
            SeatReserved(
                screening_id=cmd.screening_id, seat=cmd.seat, reservation_id=reservation_id
            ),
            stream=f"screening-{cmd.screening_id}",
        )
        return reservation_id

    return app


async def test_invoke_returns_the_handlers_result_and_commits_what_it_published() -> None:
    async with make_app() as app:
        assert await app.invoke(ReserveSeat(screening_id="7", seat="A1")) == "r-A1"
        (env,) = await app.read_stream("screening-7")
        assert env.message == SeatReserved(screening_id="7", seat="A1", reservation_id="r-A1")
        assert env.kind == "event"


async def test_a_refused_invoke_raises_refused_and_leaves_the_store_unchanged() -> None:
    async with make_app() as app:
        await app.invoke(ReserveSeat(screening_id="7", seat="A1"))
        before = await app.store.last_position()
        with pytest.raises(Refused) as refused:
            await app.invoke(ReserveSeat(screening_id="7", seat="A1"))
        assert refused.value.reason == "seat taken"
        assert refused.value.code == "seat-taken"
        assert await app.store.last_position() == before


async def test_any_other_exception_propagates_and_commits_nothing() -> None:
    app = App("t")

    @app.command
    async def explode(cmd: IssueReceipt, ctx: Context) -> None:
        ctx.publish(SeatReserved(screening_id="1", seat="x", reservation_id="r"), stream="s")
        raise RuntimeError("boom")

    async with app:
        with pytest.raises(RuntimeError, match="boom"):
            await app.invoke(IssueReceipt(reservation_id="r"))
        assert await app.store.last_position() == 0


def test_a_second_handler_for_a_command_raises_duplicate_handler() -> None:
    app = make_app()
    with pytest.raises(DuplicateHandler, match="ReserveSeat already has a handler"):

        @app.command
        async def again(cmd: ReserveSeat, ctx: Context) -> None: ...


async def test_publishing_a_command_says_to_send_or_invoke() -> None:
    async with make_app() as app:
        with pytest.raises(TypeError, match=r"app\.send .* app\.invoke"):
            await app.publish(ReserveSeat(screening_id="1", seat="A"))  # type: ignore[arg-type]


async def test_sending_an_event_says_to_publish() -> None:
    async with make_app() as app:
        with pytest.raises(TypeError, match=r"app\.publish"):
            await app.send(SeatReserved(screening_id="1", seat="A", reservation_id="r"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="published"):
            await app.invoke(SeatReserved(screening_id="1", seat="A", reservation_id="r"))  # type: ignore[arg-type]


async def test_ctx_rejects_the_wrong_kind_of_message() -> None:
    app = App("t")

    @app.command
    async def bad(cmd: IssueReceipt, ctx: Context) -> None:
        ctx.publish(cmd)  # type: ignore[arg-type]

    async with app:
        with pytest.raises(TypeError, match=r"ctx\.send"):
            await app.invoke(IssueReceipt(reservation_id="r"))


async def test_invoking_a_command_without_handler_names_the_fix() -> None:
    async with App("t") as app:
        with pytest.raises(HandlerNotFound, match=r"@app\.command"):
            await app.invoke(IssueReceipt(reservation_id="r"))


def test_registration_mistakes_are_caught_at_registration() -> None:
    app = App("t")
    with pytest.raises(ConfigurationError, match="subscriber"):

        @app.command
        async def handles_event(e: SeatReserved, ctx: Context) -> None: ...

    with pytest.raises(ConfigurationError, match=r"@app\.command"):

        @app.subscriber("wrong")
        async def takes_command(c: ReserveSeat, ctx: Context) -> None: ...

    with pytest.raises(ConfigurationError, match="annotate"):

        @app.command
        async def unannotated(c, ctx): ...  # type: ignore[no-untyped-def]

    @app.subscriber("email")
    async def email(e: SeatReserved, ctx: Context) -> None: ...

    with pytest.raises(ConfigurationError, match="already exists"):

        @app.subscriber("email")
        async def email_again(e: SeatReserved, ctx: Context) -> None: ...

    with pytest.raises(InvalidName):
        app.subscriber("no spaces allowed")


class SeatReleased(Event):
    seat: str


def test_several_subscribers_per_event_and_unions() -> None:
    app = App("t")

    @app.subscriber("email")
    async def email(e: SeatReserved, ctx: Context) -> None: ...

    @app.subscriber("website")
    async def website(e: SeatReserved | SeatReleased, ctx: Context) -> None: ...

    assert app.subscribers["website"].events == (SeatReserved, SeatReleased)
    assert set(app.subscribers) == {"email", "website"}


async def test_validate_lists_commands_without_a_handler() -> None:
    app = App("t", messages=[IssueReceipt])
    (problem,) = app.validate()
    assert problem.code == "command-without-handler"
    assert "IssueReceipt" in problem.message

    @app.command
    async def issue(cmd: IssueReceipt, ctx: Context) -> None: ...

    assert app.validate() == []


async def test_send_records_the_command_durably() -> None:
    async with App("t") as app:
        ticket = await app.send(IssueReceipt(reservation_id="r-1"))
        (env,) = await app.read_stream(ticket.stream)
        assert env.id == ticket.message_id
        assert env.kind == "command"
        assert env.message == IssueReceipt(reservation_id="r-1")
        assert [p.code for p in app.validate()] == ["command-without-handler"]


async def test_correlation_and_causation_flow_into_what_a_handler_causes() -> None:
    app = App("t")

    @app.command
    async def reserve(cmd: ReserveSeat, ctx: Context) -> str:
        ctx.publish(SeatReserved(screening_id="1", seat=cmd.seat, reservation_id="r"), stream="s")
        ctx.send(IssueReceipt(reservation_id="r"), stream="receipts")
        return ctx.message_id

    async with app:
        command_id = await app.invoke(
            ReserveSeat(screening_id="1", seat="A"), correlation_id="web-req-1"
        )
        (event,) = await app.read_stream("s")
        (sent,) = await app.read_stream("receipts")
        for env in (event, sent):
            assert env.correlation_id == "web-req-1"
            assert env.causation_id == command_id
        # A message published from outside starts its own correlation.
        done = await app.publish(
            SeatReserved(screening_id="2", seat="B", reservation_id="q"), stream="t"
        )
        (root,) = await app.read_stream("t")
        assert root.id == done
        assert root.correlation_id == root.id
        assert root.causation_id is None


async def test_publish_without_stream_uses_the_type_name() -> None:
    async with App("t") as app:
        done = await app.publish(SeatReserved(screening_id="1", seat="A", reservation_id="r"))
        (env,) = await app.read_stream("SeatReserved")
        assert env.id == done


async def test_oversized_payload_is_refused_with_advice() -> None:
    async with App("t", max_message_bytes=100) as app:
        with pytest.raises(MessageTooLarge, match="reference"):
            await app.publish(SeatReserved(screening_id="1", seat="A" * 200, reservation_id="r"))
        assert await app.store.last_position() == 0


async def test_stream_names_are_validated() -> None:
    async with App("t") as app:
        for bad in ["", "a\nb", "x" * 300]:
            with pytest.raises(InvalidName):
                await app.publish(
                    SeatReserved(screening_id="1", seat="A", reservation_id="r"), stream=bad
                )


# --- deciders -----------------------------------------------------------------------------


def decide(cmd: ReserveSeat, taken: frozenset[str]) -> list[Event]:
    if cmd.seat in taken:
        raise Refused(f"seat {cmd.seat} is taken", code="seat-taken")
    return [
        SeatReserved(screening_id=cmd.screening_id, seat=cmd.seat, reservation_id=f"r-{cmd.seat}")
    ]


def evolve(taken: frozenset[str], event: SeatReserved) -> frozenset[str]:
    return taken | {event.seat}


screening = Decider(
    decide=decide,
    evolve=evolve,
    initial=frozenset(),
    stream=lambda c: f"screening-{c.screening_id}",
)


async def test_a_decider_command_loads_decides_and_appends() -> None:
    app = App("t")
    app.decider(screening, ReserveSeat)
    async with app:
        (event,) = await app.invoke(ReserveSeat(screening_id="1", seat="A"))
        assert event == SeatReserved(screening_id="1", seat="A", reservation_id="r-A")
        with pytest.raises(Refused, match="taken"):
            await app.invoke(ReserveSeat(screening_id="1", seat="A"))
        state, version = await app.load("screening-1", evolve, frozenset())
        assert (state, version) == (frozenset({"A"}), 1)


def test_a_decider_runs_without_a_store() -> None:
    done = [SeatReserved(screening_id="1", seat="A", reservation_id="r-A")]
    assert screening.run(ReserveSeat(screening_id="1", seat="B"), done)[0].seat == "B"
    with pytest.raises(Refused):
        screening.run(ReserveSeat(screening_id="1", seat="A"), done)


async def test_a_plain_handler_conflict_reaches_the_caller_unless_retries_are_asked_for() -> None:
    app = App("t")
    runs = 0

    @app.command
    async def stale(cmd: IssueReceipt, ctx: Context) -> int:
        nonlocal runs
        runs += 1
        ctx.append(
            "acct",
            [SeatReserved(screening_id="1", seat="A", reservation_id="r")],
            expected_version=0,
        )
        return runs

    async with app:
        await app.append("acct", [SeatReserved(screening_id="1", seat="A", reservation_id="r")])
        with pytest.raises(WrongExpectedVersion):
            await app.invoke(IssueReceipt(reservation_id="r"))
        assert runs == 1


async def test_stream_turns_survive_a_cancelled_waiter() -> None:

    from tidings.decider import StreamTurns

    locks = StreamTurns()
    order: list[str] = []
    await locks.acquire("s")  # held by "first"

    async def take(name: str) -> None:
        await locks.acquire("s")
        order.append(name)
        locks.release("s")

    second = asyncio.create_task(take("second"))
    third = asyncio.create_task(take("third"))
    await asyncio.sleep(0)  # both are now waiting in line
    second.cancel()
    locks.release("s")
    await asyncio.wait_for(third, 1)
    assert order == ["third"] and second.cancelled()
    assert len(locks) == 0  # nobody holds "s" or waits for it any more
    await locks.acquire("s")
    locks.release("s")
    assert len(locks) == 0


class Recording(MemoryStore):
    """A store that overrides commit, as a user's fault-injecting or recording store would."""

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[Transaction] = []

    async def commit(self, tx: Transaction) -> list[Appended]:
        self.committed.append(tx)
        return await super().commit(tx)


class RecordingSqlite(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.committed: list[Transaction] = []

    async def commit(self, tx: Transaction) -> list[Appended]:
        self.committed.append(tx)
        return await super().commit(tx)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_store_subclass_that_overrides_commit_sees_every_commit(
    backend: str, tmp_path: Path
) -> None:
    # A subclass's override of commit() sees every commit of invoke (a decider's too), publish
    # and send.
    store = Recording() if backend == "memory" else RecordingSqlite(tmp_path / "r.db")
    app = make_app()
    app.store = store
    app.decider(
        Decider[int](
            decide=lambda cmd, n: [SeatReserved(screening_id="d", seat="X", reservation_id="d")],
            evolve=lambda n, e: n + 1,
            initial=0,
            stream=lambda cmd: f"receipts-{cmd.reservation_id}",
        ),
        IssueReceipt,
    )
    async with app:
        await app.invoke(ReserveSeat(screening_id="1", seat="A"))
        await app.invoke(IssueReceipt(reservation_id="r"))
        await app.publish(SeatReserved(screening_id="2", seat="B", reservation_id="x"))
        await app.send(ReserveSeat(screening_id="3", seat="C"))
        assert len(store.committed) == 4
        assert await store.last_position() == 4


async def test_what_an_invoke_records_has_ids_after_the_command_s_in_order() -> None:
    app = App("ids", store="memory://")

    @app.command
    def reserve(cmd: ReserveSeat, ctx: Context) -> None:
        for n in range(3):
            ctx.publish(
                SeatReserved(screening_id=cmd.screening_id, seat=f"{n}", reservation_id="r")
            )
        ctx.send(IssueReceipt(reservation_id="r"))

    async with app:
        for _ in range(300):
            await app.invoke(ReserveSeat(screening_id="1", seat="A"))
        recorded = await app.read_all(limit=5000)
    assert len(recorded) == 1200
    ids = [e.id for e in recorded]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for e in recorded:
        assert e.causation_id is not None and e.causation_id < e.id  # caused by the command
