"""The cinema service, wired in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from tidings import App, Context
from tidings.delivery import Alert, RetryPolicy
from tidings.examples.cinema.messages import (
    ConfirmReservation,
    IssueReceipt,
    PaymentFailed,
    PaymentReceived,
    ReceiptIssued,
    ReleaseSeat,
    RequestPayment,
    ReservationConfirmed,
    ReserveSeat,
    SeatReleased,
    SeatReserved,
)
from tidings.examples.cinema.purchase import PRICE_CENTS, purchase_workflow
from tidings.examples.cinema.seats import screening
from tidings.examples.cinema.services import EmailProvider, PaymentService
from tidings.store import Store


@dataclass
class Cinema:
    """The app and the neighbours it talks to (kept here so a demo or test can look at them)."""

    app: App
    payments: PaymentService
    email: EmailProvider
    receipts: list[str] = field(default_factory=list)
    #: what the operator is told of: parked messages and sent commands that died
    alerts: list[Alert] = field(default_factory=list)


def build_app(
    store: str | Store = "memory://",
    *,
    seed: int = 0,
    payment_timeout: float = 2.0,
    payments: PaymentService | None = None,
    email: EmailProvider | None = None,
) -> App:
    """The cinema service (see :func:`build_cinema` for its neighbours too)."""
    return build_cinema(
        store, seed=seed, payment_timeout=payment_timeout, payments=payments, email=email
    ).app


def build_cinema(
    store: str | Store = "memory://",
    *,
    seed: int = 0,
    payment_timeout: float = 2.0,
    payments: PaymentService | None = None,
    email: EmailProvider | None = None,
) -> Cinema:
    app = App("cinema", store=store)
    cinema = Cinema(app, payments or PaymentService(seed=seed), email or EmailProvider(seed=seed))
    # A sent command that dies must be told to someone (`tidings check`, rule TD010).
    app.on_alert(cinema.alerts.append)

    add_box_office(app, payment_timeout)
    add_payments(app, cinema.payments)
    add_email(app, cinema.email)
    return cinema


def add_box_office(app: App, payment_timeout: float) -> None:
    """The cinema's own part: seats, the purchase workflow, the website's read model and the
    receipts (the payment service and the e-mail notifier are its neighbours)."""
    # 1. Seats: reserve (invoked by the web request), release and confirm (sent by the workflow).
    app.decider(screening, ReserveSeat, ReleaseSeat, ConfirmReservation)

    # 2. The purchase workflow, with its payment timeout and compensation.
    app.workflow(purchase_workflow(payment_timeout))

    # 4b. The website's read model: written through ctx, so it commits with the checkpoint.
    @app.subscriber("website")
    async def website(
        event: SeatReserved | SeatReleased | ReservationConfirmed, ctx: Context
    ) -> None:
        status = {
            SeatReserved: "reserved",
            SeatReleased: "released",
            ReservationConfirmed: "confirmed",
        }[type(event)]
        ctx.put(
            "reservations",
            event.reservation_id,
            {"seat": event.seat, "screening": event.screening_id, "status": status},
        )
        counts = await ctx.get("counts", status) or 0
        ctx.put("counts", status, counts + 1)

    # 4c. The receipt: business-critical with one recipient, so a command, not a subscriber.
    @app.command
    async def issue_receipt(cmd: IssueReceipt, ctx: Context) -> str:
        number = f"R-{cmd.reservation_id}"
        ctx.put(
            "receipts",
            cmd.reservation_id,
            {"number": number, "guest": cmd.guest, "amount_cents": cmd.amount_cents},
        )
        ctx.publish(
            ReceiptIssued(reservation_id=cmd.reservation_id, receipt_number=number),
            stream=f"receipt-{cmd.reservation_id}",
        )
        return number

    # 5. The compensating button: an operator issues a lost receipt again from the console,
    # prefilled from the reservation's confirmation (or a dead IssueReceipt).
    app.operator_action(IssueReceipt, label="Issue the receipt again", prefill=receipt_for)

    app.register(ReceiptIssued)


def add_payments(app: App, payments: PaymentService) -> None:
    """The payment service: an async command, answered later by an event (or never)."""

    @app.command
    async def request_payment(cmd: RequestPayment, ctx: Context) -> str:
        verdict, delay = payments.answer(cmd.reservation_id)
        if verdict == "paid":
            ctx.publish(
                PaymentReceived(reservation_id=cmd.reservation_id, amount_cents=cmd.amount_cents),
                stream=f"payment-{cmd.reservation_id}",
                delay=delay,
            )
        elif verdict == "declined":
            ctx.publish(
                PaymentFailed(reservation_id=cmd.reservation_id, reason="card declined"),
                stream=f"payment-{cmd.reservation_id}",
                delay=delay,
            )
        return verdict


def add_email(app: App, email: EmailProvider) -> None:
    """4a. The e-mail notifier: may fail, is retried, may end up dead-lettered. One guest's
    broken mailbox must not hold back the others' e-mails: order does not matter here, so it
    parks and moves on instead of holding the stream (the default, sequenced, is right for
    projections)."""
    email_policy = RetryPolicy(
        max_attempts=4, immediate=1, backoff=0.05, backoff_max=0.5, sequenced=False
    )

    @app.subscriber("email", policy=email_policy)
    async def email_guest(event: ReservationConfirmed, ctx: Context) -> None:
        email.send(
            ctx.message_id,
            event.guest,
            f"seat {event.seat} of screening {event.screening_id} is yours",
            ctx.attempt,
        )


def receipt_for(message: object) -> dict[str, object] | None:
    """The receipt to issue for a confirmed reservation (None for other messages)."""
    if isinstance(message, ReservationConfirmed):
        return {
            "reservation_id": message.reservation_id,
            "guest": message.guest,
            "amount_cents": PRICE_CENTS,
        }
    if isinstance(message, IssueReceipt):
        return msgspec.to_builtins(message)  # type: ignore[no-any-return]
    return None
