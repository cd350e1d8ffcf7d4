"""Seat reservation as a decider: the screening's stream is the truth about which seats are taken."""

from __future__ import annotations

from dataclasses import dataclass, field

from tidings import App, Decider, Refused
from tidings.examples.cinema.messages import ReserveSeat, SeatReserved
from tidings.store import Store


@dataclass(frozen=True)
class Screening:
    """Which seats of a screening are taken, and by whom."""

    taken: dict[str, str] = field(default_factory=dict)


def decide(cmd: ReserveSeat, state: Screening) -> list[SeatReserved]:
    holder = state.taken.get(cmd.seat)
    if holder is not None:
        raise Refused(f"seat {cmd.seat} is already taken", code="seat-taken")
    reservation_id = f"{cmd.screening_id}-{cmd.seat}"
    return [
        SeatReserved(
            screening_id=cmd.screening_id,
            seat=cmd.seat,
            guest=cmd.guest,
            reservation_id=reservation_id,
        )
    ]


def evolve(state: Screening, event: SeatReserved) -> Screening:
    return Screening(taken={**state.taken, event.seat: event.guest})


screening: Decider[Screening] = Decider(
    decide=decide,
    evolve=evolve,
    initial=Screening,
    stream=lambda cmd: f"screening-{cmd.screening_id}",
)


def build_app(store: str | Store = "memory://") -> App:
    """The cinema service, wired."""
    app = App("cinema", store=store, messages=[ReserveSeat, SeatReserved])
    app.decider(screening, ReserveSeat)
    return app
