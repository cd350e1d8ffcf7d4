"""The cinema example, tested the way a user tests their own app: with tidings.testing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tidings.examples.cinema import (
    ConfirmReservation,
    IssueReceipt,
    PaymentReceived,
    ReleaseSeat,
    RequestPayment,
    ReservationConfirmed,
    ReserveSeat,
    SeatReleased,
    SeatReserved,
    build_cinema,
    screening,
)
from tidings.examples.cinema.purchase import purchase_workflow
from tidings.examples.cinema.services import PaymentService
from tidings.testing import Harness, WorkflowSpec, given

RESERVED = SeatReserved(screening_id="1", seat="A1", guest="ada", reservation_id="1-A1-ada")


def test_a_free_seat_is_reserved() -> None:
    given(screening).when(ReserveSeat(screening_id="1", seat="A1", guest="ada")).then([RESERVED])


def test_a_taken_seat_is_refused() -> None:
    given(screening, [RESERVED]).when(
        ReserveSeat(screening_id="1", seat="A1", guest="bob")
    ).then_refused(code="seat-taken")


def test_a_released_seat_can_be_reserved_again_but_not_confirmed() -> None:
    released = SeatReleased(
        screening_id="1", seat="A1", reservation_id="1-A1-ada", reason="timeout"
    )
    given(screening, [RESERVED, released]).when(
        ReserveSeat(screening_id="1", seat="A1", guest="bob")
    ).then([SeatReserved(screening_id="1", seat="A1", guest="bob", reservation_id="1-A1-bob")])
    given(screening, [RESERVED, released]).when(
        ConfirmReservation(screening_id="1", seat="A1", reservation_id="1-A1-ada")
    ).then_refused(code="released")


async def test_the_purchase_workflow_step_by_step() -> None:
    spec = WorkflowSpec(purchase_workflow(payment_timeout=30))
    step = await spec.when(RESERVED)
    assert step.sent == [RequestPayment(reservation_id="1-A1-ada", guest="ada", amount_cents=1250)]
    assert step.timeouts == ["payment"]
    step = await spec.when(PaymentReceived(reservation_id="1-A1-ada", amount_cents=1250))
    assert step.sent == [ConfirmReservation(screening_id="1", seat="A1", reservation_id="1-A1-ada")]
    confirmed = ReservationConfirmed(
        screening_id="1", seat="A1", guest="ada", reservation_id="1-A1-ada"
    )
    step = await spec.when(confirmed)
    assert step.sent == [IssueReceipt(reservation_id="1-A1-ada", guest="ada", amount_cents=1250)]
    assert step.completed
    # The timeout was cancelled by the payment: when it falls due nothing happens.
    late = await spec.fire_timeout("1-A1-ada", "payment")
    assert late.sent == [] and late.completed


async def test_no_payment_in_time_releases_the_seat_and_late_events_are_ignored() -> None:
    spec = WorkflowSpec(purchase_workflow(payment_timeout=30))
    await spec.given(RESERVED)
    step = await spec.fire_timeout("1-A1-ada", "payment")
    assert step.sent == [
        ReleaseSeat(
            screening_id="1", seat="A1", reservation_id="1-A1-ada", reason="no payment in time"
        )
    ]
    assert step.completed and step.state.stage == "released"
    late = await spec.when(PaymentReceived(reservation_id="1-A1-ada", amount_cents=1250))
    assert late.sent == [] and late.completed
    kinds = [env.type for env in await spec.app.read_stream(spec.workflow.stream("1-A1-ada"))]
    assert kinds[-1] == "tidings.WorkflowIgnored"


async def test_the_whole_cinema_in_a_harness_with_a_clock_that_moves() -> None:
    harness = Harness()
    # Every payment is silent: only the timeout can end these purchases.
    cinema = build_cinema(
        harness.store, payment_timeout=30, payments=PaymentService(silence_rate=1.0)
    )
    async with harness.run(cinema.app):
        for seat in ("A1", "A2"):
            await cinema.app.invoke(ReserveSeat(screening_id="1", seat=seat, guest=f"guest-{seat}"))
        await harness.settle()
        assert await harness.messages(SeatReleased) == []
        await harness.advance(29)
        assert await harness.messages(SeatReleased) == []
        await harness.advance(2)
        released = await harness.messages(SeatReleased)
        assert sorted(m.seat for m in released) == ["A1", "A2"]
        assert await harness.dead_letters() == []
        website = await cinema.app.documents("reservations")
        assert {r["status"] for r in website.values()} == {"released"}


async def test_a_timeout_fires_after_the_worker_was_restarted(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cinema.db'}"
    silent = PaymentService(silence_rate=1.0)
    first = build_cinema(db, payment_timeout=0.5, payments=silent)
    async with first.app:
        reserved_at = time.monotonic()
        await first.app.invoke(ReserveSeat(screening_id="1", seat="B7", guest="grace"))
        await (
            first.app.worker().drain()
        )  # payment requested, timeout scheduled; then the worker is gone
        assert await first.app.read_all(types=[SeatReleased]) == []
    second = build_cinema(db, payment_timeout=0.5, payments=silent)
    async with second.app:
        worker = second.app.worker(lease_ttl=1.0)
        running = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 10
            while not await second.app.read_all(types=[SeatReleased]):
                assert time.monotonic() < deadline, "the timeout never fired after the restart"
                await asyncio.sleep(0.02)
        finally:
            worker.stop()
            await running
        assert time.monotonic() - reserved_at >= 0.5
        (released,) = await second.app.read_all(types=[SeatReleased])
        assert released.message.reason == "no payment in time"
