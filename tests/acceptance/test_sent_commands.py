"""Sent commands and scheduled messages as a user meets them: a ticket's outcome and result, a
refusal that is an answer (never retried), a failure retried with backoff and then dead (with a
``CommandFailed`` event and an alert), and ``delay=``/``at=`` that hold a message until it is due.

Every test runs on ``memory://`` and on a SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tidings import App, Command, Context, Event, Refused, uuid7
from tidings.delivery.alerts import Alert
from tidings.delivery.policy import RetryPolicy
from tidings.delivery.worker import Worker
from tidings.errors import CommandDead, InvalidName
from tidings.messages import CommandFailed


class Quote(Command, type_name="cmd.Quote"):
    sku: str
    quantity: int


class Reserve(Command, type_name="cmd.Reserve"):
    sku: str


class Charge(Command, type_name="cmd.Charge"):
    order: str
    cents: int


class Book(Command, type_name="cmd.Book"):
    guest: str


class Remind(Command, type_name="cmd.Remind"):
    guest: str


class Ticked(Event, type_name="cmd.Ticked"):
    label: str


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")
        yield f"{request.getfixturevalue('postgres_url')}?schema={schema}"
    else:
        yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'cmd.db'}"


@pytest.fixture
async def app(store: str) -> AsyncIterator[App]:
    found = App("shop", store=store)
    yield found
    await found.close()


async def drain_until(
    worker: Worker, condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0
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


async def test_a_sent_command_succeeds_and_its_ticket_gives_the_json_result(app: App) -> None:
    @app.command
    async def quote(cmd: Quote, ctx: Context) -> dict[str, object]:
        return {"sku": cmd.sku, "total": 250 * cmd.quantity, "lines": [cmd.quantity]}

    worker = app.worker()
    running = asyncio.create_task(worker.run())
    try:
        ticket = await app.send(Quote(sku="tea", quantity=3))
        assert await ticket.result(timeout=10) == {"sku": "tea", "total": 750, "lines": [3]}
        outcome = await ticket.outcome(timeout=0)
        assert (outcome.status, outcome.attempts, outcome.error) == ("succeeded", 1, None)
        assert outcome.message_id == ticket.message_id and outcome.type == "cmd.Quote"
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)


async def test_a_refused_command_is_an_answer_and_is_not_retried(app: App) -> None:
    calls = 0

    @app.command(policy=RetryPolicy(max_attempts=5, immediate=2, backoff=0.01))
    def reserve(cmd: Reserve, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        ctx.publish(Ticked(label="never committed"))
        raise Refused(f"{cmd.sku} is sold out", code="sold-out")

    ticket = await app.send(Reserve(sku="tea"))
    outcome = await ticket.outcome(timeout=0)
    assert outcome.status == "pending"
    worker = app.worker()
    await worker.drain()
    outcome = await ticket.outcome(timeout=0)
    assert (outcome.status, outcome.reason, outcome.code, outcome.attempts) == (
        "refused",
        "tea is sold out",
        "sold-out",
        1,
    )
    with pytest.raises(Refused) as refused:
        await ticket.result(timeout=0)
    assert (refused.value.reason, refused.value.code) == ("tea is sold out", "sold-out")
    await worker.drain()
    assert calls == 1
    assert await app.dead_letters.list(status=None) == []
    assert await app.read_stream("cmd.Ticked") == []  # a refusal commits nothing


async def test_a_failing_command_is_retried_with_backoff_then_dead_and_reported(app: App) -> None:
    attempts_at: list[float] = []
    failures: list[CommandFailed] = []
    alerts: list[Alert] = []
    # Long enough that the drain after the first attempt is over before the second is due, even
    # on a slow machine (20 ms was not, once, on PostgreSQL in CI), short enough for a test.
    backoff = 0.2

    def call_gateway(order: str) -> None:
        raise ValueError(f"gateway down for {order}")

    @app.command(policy=RetryPolicy(max_attempts=3, immediate=0, backoff=backoff, jitter=0.0))
    async def charge(cmd: Charge, ctx: Context) -> None:
        attempts_at.append(time.monotonic())
        call_gateway(cmd.order)

    @app.subscriber("failures")
    async def on_failure(event: CommandFailed, ctx: Context) -> None:
        failures.append(event)

    app.on_alert(alerts.append)
    ticket = await app.send(Charge(order="o-9", cents=1200))
    worker = app.worker(seed=1)
    await worker.drain()
    # The first attempt failed and the next is not due yet: it is being retried.
    outcome = await ticket.outcome(timeout=0)
    assert (outcome.status, outcome.attempts) == ("failed", 1)
    assert outcome.error == "ValueError: gateway down for o-9"
    with pytest.raises(TimeoutError):
        await ticket.result(timeout=0)

    async def dead() -> bool:
        return (await ticket.outcome(timeout=0)).status == "dead"

    await drain_until(worker, dead)
    await worker.drain()  # deliver CommandFailed to its subscriber
    outcome = await ticket.outcome(timeout=0)
    assert (outcome.status, outcome.attempts) == ("dead", 3)
    assert outcome.error == "ValueError: gateway down for o-9"
    assert len(attempts_at) == 3
    # immediate=0: every retry waited its backoff (backoff, then twice that; no jitter). Due
    # times are on the store's clock, which SQLite reads to the millisecond: a retry may come up
    # to a millisecond before the backoff has passed on this process's finer clock.
    resolution = 0.0015
    assert attempts_at[1] - attempts_at[0] >= backoff - resolution
    assert attempts_at[2] - attempts_at[1] >= 2 * backoff - resolution
    with pytest.raises(CommandDead, match="dead after 3 attempt"):
        await ticket.result(timeout=0)

    (failed,) = failures
    assert failed.command_id == ticket.message_id
    assert failed.command_type == "cmd.Charge"
    assert failed.stream == ticket.stream
    assert (failed.error, failed.attempts) == ("ValueError: gateway down for o-9", 3)
    (alert,) = alerts
    assert (alert.kind, alert.subscription, alert.message_id, alert.type, alert.attempts) == (
        "command-dead",
        "cmd:cmd.Charge",
        ticket.message_id,
        "cmd.Charge",
        3,
    )
    (held,) = await app.dead_letters.list()
    assert held.message_id == ticket.message_id and held.attempts == 3
    assert held.traceback is not None and "call_gateway" in held.traceback
    assert len(attempts_at) == 3  # dead means dead: no more attempts


async def test_commands_sent_to_one_stream_wait_behind_a_dead_one_until_it_is_retried(
    app: App,
) -> None:
    """Commands sent with the same ``stream=`` are carried out in order: when one is dead, the
    ones behind it wait (pending); after the fix, a retry runs it and then them, and the dead
    ticket's outcome becomes ``succeeded``."""
    done: list[int] = []
    broken = {"on": True}

    @app.command(policy=RetryPolicy(max_attempts=2, immediate=1, backoff=0.01))
    def charge(cmd: Charge, ctx: Context) -> int:
        if broken["on"] and cmd.cents == 100:
            raise ConnectionError("bank offline")
        done.append(cmd.cents)
        return cmd.cents

    tickets = [
        await app.send(Charge(order="o-1", cents=c), stream="acct-7") for c in (100, 200, 300)
    ]
    worker = app.worker()
    await worker.drain()
    assert done == []
    statuses = [(await t.outcome(timeout=0)).status for t in tickets]
    assert statuses == ["dead", "pending", "pending"]
    (held,) = await app.dead_letters.list()
    assert held.message_id == tickets[0].message_id and held.attempts == 2

    broken["on"] = False
    await app.dead_letters.retry(held.id, actor="ops")

    async def all_done() -> bool:
        return len(done) == 3

    await drain_until(worker, all_done)
    assert done == [100, 200, 300]
    assert [await t.result(timeout=0) for t in tickets] == [100, 200, 300]
    # An operator's retry restarts the retry policy: it succeeded at the first attempt after it.
    first = await tickets[0].outcome(timeout=0)
    assert (first.status, first.attempts) == ("succeeded", 1)
    assert await app.dead_letters.list(status=None) == []


async def test_stopping_an_idle_worker_is_prompt(app: App) -> None:
    """``worker.stop()`` on a worker with nothing in flight returns at once, not after a poll."""

    @app.command
    def quote(cmd: Quote, ctx: Context) -> int:
        return cmd.quantity

    worker = app.worker()
    running = asyncio.create_task(worker.run())
    ticket = await app.send(Quote(sku="tea", quantity=2))
    assert await ticket.result(timeout=10) == 2
    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(running, timeout=10)
    took = time.monotonic() - started
    assert took < 0.5, f"worker.stop() took {took:.2f}s to return"


async def test_delayed_and_scheduled_messages_are_delivered_when_due_not_before(app: App) -> None:
    delay = 0.2
    handled: dict[str, float] = {}
    done = asyncio.Event()

    def mark(name: str) -> None:
        handled[name] = time.monotonic()
        if len(handled) == 3:
            done.set()

    @app.command
    def book(cmd: Book, ctx: Context) -> str:
        ctx.send(Remind(guest=cmd.guest), delay=delay)
        return "booked"

    @app.command
    def remind(cmd: Remind, ctx: Context) -> None:
        mark(f"remind {cmd.guest}")

    @app.subscriber("clock")
    def tick(event: Ticked, ctx: Context) -> None:
        mark(event.label)

    worker = app.worker()
    running = asyncio.create_task(worker.run())
    try:
        started = time.monotonic()
        ticket = await app.send(Book(guest="ada"))
        await app.publish(Ticked(label="delayed"), delay=delay)
        await app.publish(Ticked(label="at"), at=datetime.now(UTC) + timedelta(seconds=delay))
        # Scheduled, not yet in the log (read at once: the worker handling Book first could take
        # longer than the delay on a slow machine).
        assert await app.read_stream("cmd.Ticked") == []
        assert await ticket.result(timeout=10) == "booked"
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)
    assert set(handled) == {"remind ada", "delayed", "at"}
    for name, at in handled.items():
        assert at - started >= delay, (name, at - started)
    assert [e.message.label for e in await app.read_stream("cmd.Ticked")] in (
        ["delayed", "at"],
        ["at", "delayed"],
    )


# --- ids chosen by the caller: a repeat is the same message ------------------------------------


async def test_sending_again_with_the_same_id_carries_the_command_out_once(app: App) -> None:
    calls = 0

    @app.command
    def quote(cmd: Quote, ctx: Context) -> int:
        nonlocal calls
        calls += 1
        return 250 * cmd.quantity

    order = uuid7()
    first = await app.send(Quote(sku="tea", quantity=2), id=order)
    worker = app.worker()
    await worker.drain()
    # The sender timed out and sends again; so does a retry after the first was handled.
    again = await app.send(Quote(sku="tea", quantity=2), id=order)
    await worker.drain()
    assert (again.message_id, again.stream) == (first.message_id, first.stream)
    assert await again.result(timeout=0) == 500
    assert calls == 1
    assert [e.id for e in await app.read_stream(first.stream)] == [order]


async def test_publishing_again_with_the_same_id_reaches_each_subscriber_once(app: App) -> None:
    seen: list[str] = []

    @app.subscriber("ticks")
    def tick(event: Ticked, ctx: Context) -> None:
        seen.append(ctx.message_id)

    for _ in range(3):
        assert await app.publish(Ticked(label="once"), id="tick-2026-11-27") == "tick-2026-11-27"
    await app.worker().drain()
    assert seen == ["tick-2026-11-27"]
    assert len(await app.read_stream("cmd.Ticked")) == 1


async def test_appending_again_with_the_same_ids_records_nothing_new(app: App) -> None:
    ids = [uuid7(), uuid7()]
    events = [Ticked(label="a"), Ticked(label="b")]
    first = await app.append("ledger-1", events, expected_version=0, ids=ids)
    again = await app.append("ledger-1", events, expected_version=0, ids=ids)
    assert (
        (again.version, again.global_position)
        == (first.version, first.global_position)
        == (
            2,
            2,
        )
    )
    assert [e.id for e in await app.read_stream("ledger-1")] == ids
    with pytest.raises(ValueError, match="2 ids for 1 events"):
        await app.append("ledger-1", [Ticked(label="c")], ids=ids)


async def test_an_id_that_cannot_be_one_is_refused_with_advice(app: App) -> None:
    with pytest.raises(InvalidName, match="message id 'two words' is not allowed"):
        await app.send(Quote(sku="tea", quantity=1), id="two words")
    with pytest.raises(InvalidName, match=r"tidings\.uuid7\(\)"):
        await app.publish(Ticked(label="x"), id="")
