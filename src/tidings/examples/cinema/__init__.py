"""The running example: buying a cinema ticket (DESIGN.md §2).

1. ``ReserveSeat`` is invoked by the web request (refused if the seat is taken) → ``SeatReserved``.
2. The purchase workflow sends ``RequestPayment``; ``PaymentReceived`` / ``PaymentFailed`` come back
   as events; no payment in time → ``ReleaseSeat`` (compensation).
3. On ``PaymentReceived`` it sends ``ConfirmReservation`` → ``ReservationConfirmed``.
4. ``ReservationConfirmed`` goes to the e-mail notifier (flaky), the website's read model, and the
   workflow, which sends ``IssueReceipt`` — a command, because it is business-critical and has
   exactly one recipient.
"""

from tidings.examples.cinema.app import Cinema, build_app, build_cinema
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
from tidings.examples.cinema.seats import screening
from tidings.examples.cinema.services import EmailProvider, PaymentService

__all__ = [
    "Cinema",
    "ConfirmReservation",
    "EmailProvider",
    "IssueReceipt",
    "PaymentFailed",
    "PaymentReceived",
    "PaymentService",
    "ReceiptIssued",
    "ReleaseSeat",
    "RequestPayment",
    "ReservationConfirmed",
    "ReserveSeat",
    "SeatReleased",
    "SeatReserved",
    "build_app",
    "build_cinema",
    "screening",
]
