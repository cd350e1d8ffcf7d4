"""Delivery on PostgreSQL, as a user meets it: a projection kept by a subscriber through
``ctx.put``, a poisoned stream parked (later messages waiting behind it) and released by an
operator's retry, and a sent command's outcome and result. Driven by ``worker.drain()``; each test
has a schema of its own (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tidings import App, Command, Context, Event, Refused
from tidings.delivery.policy import RetryPolicy
from tidings.delivery.worker import Worker


class Deposited(Event, type_name="pgd.Deposited"):
    account: str
    cents: int


class Quote(Command, type_name="pgd.Quote"):
    sku: str
    quantity: int


class Reserve(Command, type_name="pgd.Reserve"):
    sku: str


@pytest.fixture
async def app(postgres_url: str, pg_schema: str) -> AsyncIterator[App]:
    from tidings.backends.postgres import PostgresStore

    found = App("bank", store=PostgresStore(postgres_url, schema=pg_schema))
    yield found
    await found.close()


async def drain_until(
    worker: Worker, condition: Callable[[], Awaitable[bool]], *, timeout: float = 20.0
) -> None:
    """Drain again and again until ``condition`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        await worker.drain()
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)  # pace the polling; the condition is what we wait for


async def test_a_subscriber_keeps_a_projection_with_ctx_put(app: App) -> None:
    @app.subscriber("balances")
    async def balance(event: Deposited, ctx: Context) -> None:
        current = await ctx.get("balances", event.account) or 0
        ctx.put("balances", event.account, current + event.cents)

    await app.open()
    for n in range(1, 21):
        await app.publish(Deposited(account=f"acct-{n % 3}", cents=n), stream=f"acct-{n % 3}")
    await app.worker().drain()
    assert await app.documents("balances") == {
        f"acct-{k}": sum(n for n in range(1, 21) if n % 3 == k) for k in range(3)
    }
    # Delivered once: draining again changes nothing.
    await app.worker().drain()
    assert await app.get("balances", "acct-1") == sum(n for n in range(1, 21) if n % 3 == 1)


async def test_a_poisoned_stream_is_parked_then_released_in_order_by_a_retry(app: App) -> None:
    delivered: dict[str, list[int]] = defaultdict(list)
    broken = {"on": True}

    @app.subscriber(
        "ledger", policy=RetryPolicy(max_attempts=3, immediate=1, backoff=0.01, jitter=0.0)
    )
    async def post(event: Deposited, ctx: Context) -> None:
        if broken["on"] and event.account == "acct-poison" and event.cents == 2:
            raise RuntimeError("ledger rejected the entry")
        delivered[event.account].append(event.cents)

    await app.open()
    for cents in range(1, 5):
        for account in ("acct-ok", "acct-poison"):
            await app.publish(Deposited(account=account, cents=cents), stream=account)
    worker = app.worker()

    async def parked() -> bool:
        return len(await app.dead_letters.list()) == 1

    await drain_until(worker, parked)
    assert delivered == {"acct-ok": [1, 2, 3, 4], "acct-poison": [1]}
    (dead,) = await app.dead_letters.list()
    assert (dead.stream, dead.status, dead.attempts) == ("acct-poison", "dead", 3)
    assert dead.error == "RuntimeError: ledger rejected the entry"
    waiting = await app.dead_letters.list(stream="acct-poison", status="waiting")
    assert len(waiting) == 2

    broken["on"] = False
    await app.dead_letters.retry(dead.id, actor="alice")

    async def nothing_held() -> bool:
        return not await app.dead_letters.list(status=None)

    await drain_until(worker, nothing_held)
    assert delivered["acct-poison"] == [1, 2, 3, 4]
    assert [(e.actor, e.action) for e in await app.store.audit_entries()] == [
        ("alice", "dlq.retry")
    ]


async def test_a_sent_commands_outcome_and_result_are_recorded(app: App) -> None:
    @app.command
    async def quote(cmd: Quote, ctx: Context) -> dict[str, object]:
        return {"sku": cmd.sku, "total": 250 * cmd.quantity}

    @app.command
    def reserve(cmd: Reserve, ctx: Context) -> None:
        raise Refused(f"{cmd.sku} is sold out", code="sold-out")

    await app.open()
    quoted = await app.send(Quote(sku="tea", quantity=3))
    refused = await app.send(Reserve(sku="tea"))
    assert (await quoted.outcome(timeout=0)).status == "pending"
    await app.worker().drain()
    assert await quoted.result(timeout=0) == {"sku": "tea", "total": 750}
    outcome = await quoted.outcome(timeout=0)
    assert (outcome.status, outcome.attempts, outcome.type) == ("succeeded", 1, "pgd.Quote")
    with pytest.raises(Refused) as caught:
        await refused.result(timeout=0)
    assert (caught.value.reason, caught.value.code) == ("tea is sold out", "sold-out")


async def test_a_running_worker_answers_a_sent_command(app: App) -> None:
    @app.command
    async def quote(cmd: Quote, ctx: Context) -> int:
        return 250 * cmd.quantity

    worker = app.worker()
    running = asyncio.create_task(worker.run())
    try:
        ticket = await app.send(Quote(sku="tea", quantity=2))
        assert await ticket.result(timeout=20) == 500
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=20)
    assert all(p.owner is None for p in await app.store.partitions())  # leases released
