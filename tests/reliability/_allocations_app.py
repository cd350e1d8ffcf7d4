"""The app of the lost-update test, run in worker processes (``python -m tidings worker
tests/reliability/_allocations_app.py:app``) on the store ``TIDINGS_ALLOCATIONS_STORE`` names.

The allocations view of "Architecture Patterns with Python": one document per order, updated by
one subscriber from ``Allocated`` events of several product streams, by reading the document,
changing it and writing it back (the way the port that lost updates wrote it).
"""

from __future__ import annotations

import os

from tidings import App, Context, Event

VIEW = "allocations-view"
COLLECTION = "allocations"
PARTITIONS = 8


class Allocated(Event):
    """A line of an order was allocated to a batch of its product (its stream: ``product-<sku>``)."""

    orderid: str
    sku: str
    batchref: str


def build_app(store: str) -> App:
    app = App("allocations", store=store, messages=[Allocated])

    @app.subscriber(VIEW, partitions=PARTITIONS)
    async def add_line(event: Allocated, ctx: Context) -> None:
        rows = await ctx.get(COLLECTION, event.orderid) or []
        rows.append([event.sku, event.batchref])
        ctx.put(COLLECTION, event.orderid, rows)

    return app


app = build_app(os.environ.get("TIDINGS_ALLOCATIONS_STORE", "memory://"))
