"""The two services of the kill -9 test, chosen by ``TIDINGS_TX_ROLE``: ``cinema`` relays its
``SeatReserved`` events to RabbitMQ; ``payments`` records them and keeps, per screening, the list
of seats its subscriber saw (a document written with the checkpoint: an exactly-once effect)."""

from __future__ import annotations

import os

from tidings import App, Context, Event
from tidings.transports import Routes


class SeatReserved(Event, type_name="kill.SeatReserved"):
    screening: str
    seat: int


ROLE = os.environ["TIDINGS_TX_ROLE"]
app = App(ROLE, store=f"sqlite:///{os.environ['TIDINGS_TX_DB']}")
_options: dict[str, object] = {"namespace": os.environ["TIDINGS_TX_NS"], "batch_size": 50}
if os.environ["TIDINGS_TX_URL"].startswith("nats"):
    _options["ack_wait"] = 2.0  # what a killed consumer had received comes again soon
if os.environ["TIDINGS_TX_URL"].startswith("kafka"):
    _options["idempotent"] = False  # tansu's memory storage gives no producer ids
if ROLE == "cinema":
    app.connect(
        os.environ["TIDINGS_TX_URL"],
        Routes().publish(SeatReserved, topic="cinema.seats"),
        **_options,
    )
else:
    app.connect(
        os.environ["TIDINGS_TX_URL"], Routes().subscribe("cinema.seats", SeatReserved), **_options
    )

    @app.subscriber("ledger", partitions=2)
    async def ledger(event: SeatReserved, ctx: Context) -> None:
        seats = await ctx.get("seats", event.screening) or []
        ctx.put("seats", event.screening, [*seats, event.seat])
