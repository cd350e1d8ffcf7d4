"""A handler's failure caused by the store (raised from ``StoreUnavailable``, as a client library
wrapping it would) is no attempt of the message: on SQLite, with ``RetryPolicy(max_attempts=1)``,
the message is neither held nor dead, the subscription waits, the failure is logged once per
occurrence, and the message is handled when the store answers again. A failure not caused by the
store still counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from _worker_procs import wait_for

from tidings import App, Context, Event
from tidings.delivery.policy import RetryPolicy
from tidings.errors import StoreUnavailable
from tidings.records import DEAD


class Order(Event, type_name="outage.Order"):
    n: int


class LookupFailed(Exception):
    """What a client library of the handler raises, wrapping the store's error."""


async def test_a_failure_caused_by_the_store_is_no_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = App("handlers", store=f"sqlite:///{tmp_path / 'app.db'}", messages=[Order])
    store_down = True
    failures = 0
    done: list[int] = []

    @app.subscriber("orders", policy=RetryPolicy(max_attempts=1))
    async def order(event: Order, ctx: Context) -> None:
        nonlocal failures
        if event.n == 1 and store_down:
            failures += 1
            try:
                raise StoreUnavailable("the inventory store cannot be reached")
            except StoreUnavailable as exc:
                raise LookupFailed(f"cannot look up order {event.n}") from exc
        if event.n == 2:
            raise ValueError("a bug in the handler")
        done.append(event.n)

    caplog.set_level(logging.INFO, logger="tidings")
    async with app:
        await app.publish(Order(n=1), stream="order-1")
        await app.publish(Order(n=2), stream="order-2")
        worker = app.worker(lease_ttl=2.0)
        running = asyncio.create_task(worker.run())
        await wait_for(_true(lambda: failures >= 3), 10, "the handler to be tried again")
        assert await app.store.held() == []  # the subscription waits; nothing is held
        store_down = False
        await wait_for(_true(lambda: done == [1]), 10, "order 1 handled")
        await wait_for(_held(app), 10, "order 2 dead")
        worker.stop()
        await asyncio.wait_for(running, 30)
        held = await app.store.held()
    assert [(h.stream, h.status) for h in held] == [("order-2", DEAD)]
    lines = [r.getMessage() for r in caplog.records]
    failed = [m for m in lines if "failed because the store is unavailable" in m]
    assert len(failed) == failures, lines
    assert "LookupFailed" not in failed[0] and "order-1" in failed[0], failed[0]


def _held(app: App) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await app.store.held())

    return check


def _true(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check
