"""The cinema's messages: commands ask, events tell."""

from __future__ import annotations

from tidings import Command, Event
from tidings.topology import allow


# Invoked by the web request, which is not among the modules `tidings check` reads.
@allow("TD002")
class ReserveSeat(Command, type_name="cinema.ReserveSeat"):
    """Reserve one seat of a screening for a guest; refused when the seat is taken."""

    screening_id: str
    seat: str
    guest: str


class SeatReserved(Event, type_name="cinema.SeatReserved"):
    """A seat was reserved for a guest (not yet paid)."""

    screening_id: str
    seat: str
    guest: str
    reservation_id: str


class ReleaseSeat(Command, type_name="cinema.ReleaseSeat"):
    """Give a reserved seat back (compensation: the payment failed or never came)."""

    screening_id: str
    seat: str
    reservation_id: str
    reason: str


class SeatReleased(Event, type_name="cinema.SeatReleased"):
    """A reserved seat is free again."""

    screening_id: str
    seat: str
    reservation_id: str
    reason: str


class RequestPayment(Command, type_name="cinema.RequestPayment"):
    """Ask the payment service to collect the price (it answers later, or never)."""

    reservation_id: str
    guest: str
    amount_cents: int


class PaymentReceived(Event, type_name="cinema.PaymentReceived"):
    """The bank transfer arrived."""

    reservation_id: str
    amount_cents: int


class PaymentFailed(Event, type_name="cinema.PaymentFailed"):
    """The payment was declined."""

    reservation_id: str
    reason: str


class ConfirmReservation(Command, type_name="cinema.ConfirmReservation"):
    """Make a paid reservation final; refused if the seat was released meanwhile."""

    screening_id: str
    seat: str
    reservation_id: str


class ReservationConfirmed(Event, type_name="cinema.ReservationConfirmed"):
    """The guest has the seat: paid and final."""

    screening_id: str
    seat: str
    guest: str
    reservation_id: str


class IssueReceipt(Command, type_name="cinema.IssueReceipt"):
    """Issue the receipt for a confirmed reservation (business-critical, one recipient)."""

    reservation_id: str
    guest: str
    amount_cents: int


class ReceiptIssued(Event, type_name="cinema.ReceiptIssued"):
    """The receipt exists."""

    reservation_id: str
    receipt_number: str
