"""The app the worker-crash and two-worker tests run in worker processes (``python -m tidings
worker tests/reliability/_crash_app.py:app``).

Configured by environment: ``TIDINGS_CRASH_STORE`` (a store URL, e.g. ``postgresql://…?schema=…``) or
else ``TIDINGS_CRASH_DB`` (a SQLite file), and ``TIDINGS_CRASH_EFFECTS`` (a directory for side-effect
files). Two subscriptions take every ``Tick``:

* ``projection`` keeps, per stream, the last ``n`` applied and how many were applied, through
  ``ctx.get``/``ctx.put`` (committed with the checkpoint: exactly once). An ``n`` that is not the
  last one plus one is recorded in the ``violations`` collection instead of raising.
* ``effects`` appends ``"{pid} {stream} {n} {message_id}"`` to ``effects-{pid}.log`` (opened,
  appended and flushed per event): a side effect outside the store, at least once.

``TIDINGS_CRASH_DELAY`` (seconds, default 0) makes both handlers await that long per event, as a
handler calling a slow service would: it keeps a worker busy long enough to be killed mid-batch.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tidings import App, Context, Event
from tidings.store import Store

PROJECTION = "projection"
EFFECTS = "effects"
PARTITIONS = 8


class Tick(Event):
    """The ``n``-th event (from 1) of stream ``tick-{stream_n}``."""

    stream_n: int
    n: int


def stream_name(stream_n: int) -> str:
    return f"tick-{stream_n}"


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def build_app(db: str, effects_dir: str, delay: float = 0.0) -> App:
    """The app on the SQLite file ``db``."""
    return build_app_at(f"sqlite:///{db}", effects_dir, delay)


def build_app_at(store: str | Store, effects_dir: str, delay: float = 0.0) -> App:
    """The app on ``store`` (a URL or a store)."""
    app = App("crash", store=store, messages=[Tick])
    effects = Path(effects_dir)

    @app.subscriber(PROJECTION, partitions=PARTITIONS)
    async def project(event: Tick, ctx: Context) -> None:
        if delay:
            await asyncio.sleep(delay)
        key = stream_name(event.stream_n)
        doc = await ctx.get("last", key) or {"last": 0, "count": 0, "by": {}}
        if event.n != doc["last"] + 1:
            ctx.put(
                "violations",
                f"{key}:{event.n}:{ctx.message_id}",
                {"stream": key, "expected": doc["last"] + 1, "got": event.n, "pid": os.getpid()},
            )
        by = dict(doc["by"])
        pid = str(os.getpid())
        by[pid] = by.get(pid, 0) + 1
        ctx.put("last", key, {"last": event.n, "count": doc["count"] + 1, "by": by})

    @app.subscriber(EFFECTS, partitions=PARTITIONS)
    async def effect(event: Tick, ctx: Context) -> None:
        if delay:
            await asyncio.sleep(delay)
        pid = os.getpid()
        _append_line(
            effects / f"effects-{pid}.log", f"{pid} {ctx.stream} {event.n} {ctx.message_id}\n"
        )

    return app


_db = os.environ.get("TIDINGS_CRASH_DB")
_store = os.environ.get("TIDINGS_CRASH_STORE") or (f"sqlite:///{_db}" if _db else None)
app = (
    build_app_at(
        _store,
        os.environ["TIDINGS_CRASH_EFFECTS"],
        float(os.environ.get("TIDINGS_CRASH_DELAY", 0)),
    )
    if _store
    else None
)
