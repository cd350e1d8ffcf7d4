"""The cinema's messages."""

from __future__ import annotations

from tidings import Command, Event


class ReserveSeat(Command, type_name="cinema.ReserveSeat"):
    """Reserve one seat of a screening for a guest; refused when the seat is taken."""

    screening_id: str
    seat: str
    guest: str


class SeatReserved(Event, type_name="cinema.SeatReserved"):
    """A seat was reserved for a guest."""

    screening_id: str
    seat: str
    guest: str
    reservation_id: str
