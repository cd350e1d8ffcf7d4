"""The purchase workflow: reserved → payment requested → confirmed → receipt; or released."""

from __future__ import annotations

import msgspec

from tidings.examples.cinema.messages import (
    ConfirmReservation,
    IssueReceipt,
    PaymentFailed,
    PaymentReceived,
    ReleaseSeat,
    RequestPayment,
    ReservationConfirmed,
    SeatReserved,
)
from tidings.workflow import Step, Workflow, WorkflowTimeout

PRICE_CENTS = 1250


class Purchase(msgspec.Struct):
    """One guest buying one seat."""

    screening_id: str = ""
    seat: str = ""
    guest: str = ""
    stage: str = "new"


def purchase_workflow(payment_timeout: float) -> Workflow[Purchase]:
    """The workflow, with how long to wait for the payment before giving the seat back."""
    purchase = Workflow("purchase", state=Purchase, key=lambda e: e.reservation_id)

    @purchase.on(SeatReserved, starts=True)
    def reserved(state: Purchase, event: SeatReserved, step: Step) -> Purchase:
        step.send(
            RequestPayment(
                reservation_id=event.reservation_id, guest=event.guest, amount_cents=PRICE_CENTS
            )
        )
        step.timeout("payment", after=payment_timeout)
        return Purchase(event.screening_id, event.seat, event.guest, "awaiting-payment")

    @purchase.on(PaymentReceived)
    def paid(state: Purchase, event: PaymentReceived, step: Step) -> Purchase:
        step.cancel_timeout("payment")
        step.send(
            ConfirmReservation(
                screening_id=state.screening_id, seat=state.seat, reservation_id=step.key
            )
        )
        return msgspec.structs.replace(state, stage="paid")

    @purchase.on(PaymentFailed)
    def declined(state: Purchase, event: PaymentFailed, step: Step) -> Purchase:
        return release(state, step, f"payment failed: {event.reason}")

    @purchase.on_timeout("payment")
    def timed_out(state: Purchase, timeout: WorkflowTimeout, step: Step) -> Purchase:
        return release(state, step, "no payment in time")

    @purchase.on(ReservationConfirmed)
    def confirmed(state: Purchase, event: ReservationConfirmed, step: Step) -> Purchase:
        step.send(
            IssueReceipt(reservation_id=step.key, guest=state.guest, amount_cents=PRICE_CENTS)
        )
        step.complete()
        return msgspec.structs.replace(state, stage="confirmed")

    return purchase


def release(state: Purchase, step: Step, reason: str) -> Purchase:
    """Compensation: give the seat back and end the purchase."""
    step.send(
        ReleaseSeat(
            screening_id=state.screening_id, seat=state.seat, reservation_id=step.key, reason=reason
        )
    )
    step.complete()
    return msgspec.structs.replace(state, stage="released")
