"""The app the outage tests run in a worker process (``python -m tidings worker
tests/reliability/_outage_app.py:app``).

Configured by environment: ``TIDINGS_OUTAGE_STORE`` (a PostgreSQL URL), ``TIDINGS_OUTAGE_SCHEMA``
and ``TIDINGS_OUTAGE_DIR`` (a directory for marker files). The store gives up on an unreachable
server after half a second, so that a handler's ``ctx.get`` fails within an outage, as it did
after 30 s in a long one. The subscriber ``counter`` (``RetryPolicy(max_attempts=3)``: before
outages were told apart, one outage made a message dead) records every ``Ping`` in a document
through ``ctx.get``/``ctx.put``, and appends a line per handling to ``effects.log``. For a
``Ping`` with ``wait=True`` it first touches ``waiting-<n>`` and waits until ``go-<n>`` exists, so
that the test can stop the server while the handler is about to read.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tidings import App, Context, Event
from tidings.backends.postgres import PostgresStore
from tidings.delivery.policy import RetryPolicy

COUNTER = "counter"
RETRY_TIMEOUT = 0.5


class Ping(Event):
    n: int
    wait: bool = False


def build_app(url: str, schema: str, directory: Path) -> App:
    store = PostgresStore(url, schema=schema, retry_timeout=RETRY_TIMEOUT)
    app = App("outage", store=store, messages=[Ping])

    @app.subscriber(COUNTER, policy=RetryPolicy(max_attempts=3, backoff=0.2), partitions=2)
    async def count(event: Ping, ctx: Context) -> None:
        if event.wait:
            (directory / f"waiting-{event.n}").touch()
            while True:
                if _exists(directory / f"go-{event.n}"):
                    break
                await asyncio.sleep(0.01)
        _append_line(directory / "effects.log", f"{event.n}\n")
        doc = await ctx.get("pings", "all") or {"seen": []}
        ctx.put("pings", "all", {"seen": [*doc["seen"], event.n]})

    return app


def _exists(path: Path) -> bool:
    return path.exists()


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


_url = os.environ.get("TIDINGS_OUTAGE_STORE")
app = (
    build_app(_url, os.environ["TIDINGS_OUTAGE_SCHEMA"], Path(os.environ["TIDINGS_OUTAGE_DIR"]))
    if _url
    else None
)
