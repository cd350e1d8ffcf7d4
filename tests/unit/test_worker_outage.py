"""A worker outlives its store being unavailable for a while."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tidings import App, Context, Event
from tidings.backends.memory import MemoryStore
from tidings.errors import StoreUnavailable


class Beat(Event):
    n: int


class DownAtFirst(MemoryStore):
    """A store whose lease claims fail a few times, as if its server were restarting."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def claim(self, *args: Any, **kwargs: Any) -> dict[int, int]:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the server is restarting")
        return await super().claim(*args, **kwargs)


async def test_a_subscription_survives_failed_claims_and_delivers_afterwards() -> None:
    store = DownAtFirst(failures=3)
    app = App("t", store=store)
    seen: list[int] = []

    @app.subscriber("beats")
    async def beats(event: Beat, ctx: Context) -> None:
        seen.append(event.n)

    async with app:
        await app.publish(Beat(n=1), stream="b")
        worker = app.worker(idle_poll=0.01)
        running = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 5
            while seen != [1]:
                assert time.monotonic() < deadline, f"not delivered after the outage (seen {seen})"
                assert not running.done(), "the worker stopped"
                await asyncio.sleep(0.01)
        finally:
            worker.stop()
            await running
    assert store.failures == 0
