"""The seat-reservation domain the benchmarks share: a tidings decider and the same aggregate for
eventsourcing, so every contender does the same work."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from eventsourcing.domain import Aggregate, event

from tidings import App, Command, Decider, Event, Refused


class ReserveSeat(Command):
    screening_id: str
    seat: str
    customer: str


class ReserveSeats(Command):
    screening_id: str
    seats: list[str]
    customer: str


class SeatReserved(Event):
    screening_id: str
    seat: str
    customer: str


Seats = frozenset[str]


def decide(command: ReserveSeat | ReserveSeats, reserved: Seats) -> list[SeatReserved]:
    wanted = [command.seat] if isinstance(command, ReserveSeat) else command.seats
    taken = reserved.intersection(wanted)
    if taken:
        raise Refused(f"seats already reserved: {', '.join(sorted(taken))}", code="seat-taken")
    return [
        SeatReserved(screening_id=command.screening_id, seat=seat, customer=command.customer)
        for seat in wanted
    ]


def evolve(reserved: Seats, fact: SeatReserved) -> Seats:
    return reserved | {fact.seat}


screening = Decider[Seats](
    decide=decide,
    evolve=evolve,
    initial=frozenset(),
    stream=lambda command: f"screening-{command.screening_id}",
)

SEATS = [f"{row}{number}" for row in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for number in range(1, 41)]


def cinema_app(url: str) -> App:
    app = App("cinema", store=url)
    app.decider(screening, ReserveSeat, ReserveSeats)
    return app


def reserve(screening_id: str, seats: int) -> ReserveSeat | ReserveSeats:
    if seats == 1:
        return ReserveSeat(screening_id=screening_id, seat="A1", customer="customer-1")
    return ReserveSeats(screening_id=screening_id, seats=SEATS[:seats], customer="customer-1")


# --- the same domain, for eventsourcing --------------------------------------------------------


class EsScreening(Aggregate):
    @event("FirstSeatReserved")
    def __init__(self, seat: str, customer: str) -> None:
        self.seats = {seat: customer}

    @event("SeatReserved")
    def reserve(self, seat: str, customer: str) -> None:
        self.seats[seat] = customer


def es_new_screening(seats: int) -> EsScreening:
    aggregate = EsScreening(seat=SEATS[0], customer="customer-1")
    for seat in SEATS[1:seats]:
        aggregate.reserve(seat=seat, customer="customer-1")
    return aggregate


@contextlib.contextmanager
def es_saving(app: Any) -> Iterator[Callable[[], int]]:
    """A function saving a new 1-event screening through eventsourcing's ``app`` (warmed up with
    one save first); the app is closed afterwards."""
    try:
        app.save(es_new_screening(1))

        def save() -> int:
            app.save(es_new_screening(1))
            return 1

        yield save
    finally:
        app.close()
