"""The running example: buying a cinema ticket (DESIGN.md §2).

So far it holds the first step, seat reservation as a decider; the rest of the story
(payment workflow, e-mail, receipts) is added as the delivery engine lands.
"""

from tidings.examples.cinema.messages import ReserveSeat, SeatReserved
from tidings.examples.cinema.seats import build_app, screening

__all__ = ["ReserveSeat", "SeatReserved", "build_app", "screening"]
