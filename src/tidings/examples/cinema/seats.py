"""Seats of a screening, as a decider: the screening's stream is the truth about every seat."""

from __future__ import annotations

import msgspec

from tidings import Decider, Event, Refused
from tidings.examples.cinema.messages import (
    ConfirmReservation,
    ReleaseSeat,
    ReservationConfirmed,
    ReserveSeat,
    SeatReleased,
    SeatReserved,
)


class Seat(msgspec.Struct, frozen=True):
    reservation_id: str
    guest: str
    confirmed: bool = False


class Screening(msgspec.Struct, frozen=True):
    """Which seats are held or sold, and to whom."""

    seats: dict[str, Seat] = msgspec.field(default_factory=dict)


Command = ReserveSeat | ReleaseSeat | ConfirmReservation


def decide(cmd: Command, state: Screening) -> list[Event]:
    seat = state.seats.get(cmd.seat)
    if isinstance(cmd, ReserveSeat):
        if seat is not None:
            raise Refused(f"seat {cmd.seat} is already taken", code="seat-taken")
        reservation_id = f"{cmd.screening_id}-{cmd.seat}-{cmd.guest}"
        return [
            SeatReserved(
                screening_id=cmd.screening_id,
                seat=cmd.seat,
                guest=cmd.guest,
                reservation_id=reservation_id,
            )
        ]
    if seat is None or seat.reservation_id != cmd.reservation_id:
        if isinstance(cmd, ReleaseSeat):
            return []  # already released: releasing again changes nothing
        raise Refused(
            f"reservation {cmd.reservation_id} no longer holds seat {cmd.seat}", code="released"
        )
    if isinstance(cmd, ReleaseSeat):
        if seat.confirmed:
            raise Refused(f"seat {cmd.seat} is paid and confirmed", code="confirmed")
        return [
            SeatReleased(
                screening_id=cmd.screening_id,
                seat=cmd.seat,
                reservation_id=cmd.reservation_id,
                reason=cmd.reason,
            )
        ]
    if seat.confirmed:
        return []
    return [
        ReservationConfirmed(
            screening_id=cmd.screening_id,
            seat=cmd.seat,
            guest=seat.guest,
            reservation_id=cmd.reservation_id,
        )
    ]


def evolve(state: Screening, event: Event) -> Screening:
    seats = dict(state.seats)
    if isinstance(event, SeatReserved):
        seats[event.seat] = Seat(event.reservation_id, event.guest)
    elif isinstance(event, SeatReleased):
        seats.pop(event.seat, None)
    elif isinstance(event, ReservationConfirmed):
        seats[event.seat] = Seat(event.reservation_id, event.guest, confirmed=True)
    return Screening(seats)


def screening_stream(cmd: Command) -> str:
    return f"screening-{cmd.screening_id}"


screening: Decider[Screening] = Decider(
    decide=decide, evolve=evolve, initial=Screening, stream=screening_stream
)
