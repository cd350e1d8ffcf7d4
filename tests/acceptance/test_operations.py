"""What an operator sees and does from Python: messages nothing handles, honest lag, orphaned
subscriptions, reset and delete, bulk skips, and every attempt of a dead letter.

Each test runs on a SQLite file (what `tidings` commands open); the store-level semantics are in
the backend contract (``tidings.testing.operations``) for every backend.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tidings import App, Command, Context, Event
from tidings.delivery.policy import RetryPolicy
from tidings.errors import ConfigurationError, SubscriptionInUse, SubscriptionNotFound


class Shipped(Event, type_name="ops.Shipped"):
    order: str


class Billed(Event, type_name="ops.Billed"):
    order: str


class Ping(Command, type_name="ops.Ping"):
    n: int


class OrderSubmitted(Event, type_name="ops.OrderSubmitted"):
    """Today's name of yesterday's ``ops.OrderPlaced`` (a renamed class)."""

    order: str


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "ops.db"


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``condition`` (a worker runs in the background) until it holds, or fail."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.01)


def failing(name: str, app: App, policy: RetryPolicy | None = None) -> list[str]:
    seen: list[str] = []

    @app.subscriber(name, policy=policy or RetryPolicy(max_attempts=3, immediate=2))
    def handle(event: Shipped, ctx: Context) -> None:
        seen.append(event.order)
        raise LookupError(f"no address for {event.order}")

    return seen


# --- item 5: nothing waits without anyone knowing --------------------------------------------


async def test_a_renamed_event_class_is_dead_lettered_with_its_cause(db: Path) -> None:
    # Yesterday's deployment (another process): the subscriber took ops.OrderPlaced.
    yesterday = textwrap.dedent(
        f"""
        import asyncio
        from tidings import App, Context, Event

        class OrderPlaced(Event, type_name="ops.OrderPlaced"):
            order: str

        app = App("shop", store="sqlite:///{db}")

        @app.subscriber("email")
        def email(event: OrderPlaced, ctx: Context) -> None:
            pass

        async def main() -> None:
            async with app:
                await app.publish(OrderPlaced(order="o1"), stream="order-o1")
                await app.worker().drain()
                await app.publish(OrderPlaced(order="o2"), stream="order-o2")

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", yesterday, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()

    # Today the class is renamed (and so is its stored type): o2 was never handled.
    handled: list[str] = []
    async with App("shop", store=f"sqlite:///{db}") as app:

        @app.subscriber("email")
        def email(event: OrderSubmitted, ctx: Context) -> None:
            handled.append(event.order)

        await app.worker().drain()
        (dead,) = await app.dead_letters.list(subscription="email")
        assert (dead.type, dead.stream, dead.status) == ("ops.OrderPlaced", "order-o2", "dead")
        assert dead.error is not None
        assert "no class has this type name" in dead.error
        assert "type_name='ops.OrderPlaced'" in dead.error
        assert handled == []
        unhandled = await app.unhandled()
        assert [(u.kind, u.type, u.count) for u in unhandled] == [("event", "ops.OrderPlaced", 2)]


async def test_the_worker_warns_at_start_of_messages_nothing_handles(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with App("sender", store=f"sqlite:///{db}") as sender:
        await sender.send(Ping(n=1))
        await sender.send(Ping(n=2))
    async with App("shop", store=f"sqlite:///{db}") as app:

        @app.subscriber("audit")
        def audit(event: Shipped, ctx: Context) -> None:
            pass

        assert app.validate() == []  # ops.Ping is not this App's type: a warning, not an error
        (found,) = await app.unhandled()
        assert (found.kind, found.type, found.count) == ("command", "ops.Ping", 2)
        worker = app.worker()
        with caplog.at_level(logging.WARNING, logger="tidings.worker"):
            task = asyncio.create_task(worker.run())

            async def warned() -> bool:
                return any("ops.Ping" in r.getMessage() for r in caplog.records)

            await wait_until(warned)
            worker.stop()
            await task
        (warning,) = [r.getMessage() for r in caplog.records if "ops.Ping" in r.getMessage()]
        assert "2 command(s)" in warning and "nothing handles" in warning


async def test_lag_counts_only_the_subscription_s_own_types_and_held_ones_apart(
    db: Path,
) -> None:
    async with App("shop", store=f"sqlite:///{db}") as app:
        failing("email", app)

        @app.command
        def ping(cmd: Ping, ctx: Context) -> int:
            return cmd.n

        await app.worker().drain()  # sets the subscriptions up at the log's start
        for n in range(5):
            await app.invoke(Ping(n=n))  # invoked, never stored
            await app.publish(Billed(order=f"o{n}"))
        await app.publish(Shipped(order="o1"), stream="order-o1")
        await app.publish(Shipped(order="o1-again"), stream="order-o1")
        await app.publish(Shipped(order="o2"), stream="order-o2")

        states = {s.name: s for s in await app.subscriptions.list()}
        assert states["cmd:ops.Ping"].pending == 0
        email = states["email"]
        assert (email.pending, email.parked, email.waiting) == (3, 0, 0)
        assert email.oldest_age is not None and 0 <= email.oldest_age < 60
        assert email.state == "stopped" and email.types == ["ops.Shipped"]

        await app.worker().drain()
        email = (await app.subscriptions.list("email"))[0]
        assert (email.pending, email.parked, email.waiting) == (0, 2, 1)
        assert email.oldest_age is None


async def test_a_subscription_the_app_no_longer_has_is_orphaned(db: Path) -> None:
    async with App("shop", store=f"sqlite:///{db}") as app:

        @app.subscriber("old-name")
        def email(event: Shipped, ctx: Context) -> None:
            pass

        await app.worker().drain()
    async with App("shop", store=f"sqlite:///{db}") as app:

        @app.subscriber("new-name")
        def renamed(event: Shipped, ctx: Context) -> None:
            pass

        await app.worker().drain()
        await app.publish(Shipped(order="o1"))
        states = {s.name: s for s in await app.subscriptions.list()}
        assert states["old-name"].state == "orphaned"
        assert states["old-name"].pending == 1  # its types are remembered
        assert states["new-name"].state == "stopped"


# --- item 6: an operator can clean up --------------------------------------------------------


async def test_reset_to_start_delivers_again_and_is_audited(db: Path) -> None:
    seen: list[str] = []
    async with App("shop", store=f"sqlite:///{db}") as app:

        @app.subscriber("email")
        def email(event: Shipped, ctx: Context) -> None:
            seen.append(event.order)

        await app.publish(Shipped(order="o1"))
        await app.publish(Shipped(order="o2"))
        await app.worker().drain()
        assert seen == ["o1", "o2"]
        assert await app.subscriptions.reset("email", "start", actor="ada") == 0
        await app.worker().drain()
        assert seen == ["o1", "o2", "o1", "o2"]
        assert await app.subscriptions.reset("email", "end", actor="ada") == 2
        await app.publish(Shipped(order="o3"))
        await app.worker().drain()
        assert seen[-1] == "o3" and len(seen) == 5
        assert await app.subscriptions.reset("email", 1) == 1
        entries = await app.store.audit_entries()
        assert [(e.actor, e.action, e.target) for e in entries[1:]] == [
            ("ada", "subscription.reset", "email"),
            ("ada", "subscription.reset", "email"),
        ]
        assert "to 0 (checkpoints were 2)" in entries[2].detail
        with pytest.raises(ConfigurationError, match="from 0 to 3"):
            await app.subscriptions.reset("email", 99)
        with pytest.raises(SubscriptionNotFound, match="nope"):
            await app.subscriptions.reset("nope", "start")


async def test_delete_is_refused_while_a_worker_runs_it_unless_forced(db: Path) -> None:
    async with App("shop", store=f"sqlite:///{db}") as app:

        @app.subscriber("email", partitions=2)
        def email(event: Shipped, ctx: Context) -> None:
            pass

        worker = app.worker()
        task = asyncio.create_task(worker.run())
        try:

            async def running() -> bool:
                return [s.state for s in await app.subscriptions.list("email")] == ["running"]

            await wait_until(running)
            with pytest.raises(SubscriptionInUse, match=worker.id):
                await app.subscriptions.delete("email", actor="ada")
            assert [s.name for s in await app.subscriptions.list()] == ["email"]
            await app.subscriptions.delete("email", actor="ada", force=True)
            assert await app.subscriptions.list("email") == []
        finally:
            worker.stop()
            await task
        (entry,) = await app.store.audit_entries()
        assert (entry.actor, entry.action, entry.target) == ("ada", "subscription.delete", "email")


async def test_bulk_skip_by_error_and_subscription_releases_what_waits(db: Path) -> None:
    async with App("shop", store=f"sqlite:///{db}") as app:
        failing("email", app, RetryPolicy(max_attempts=1))
        failing("sms", app, RetryPolicy(max_attempts=1))
        for order in ("o1", "o2"):
            await app.publish(Shipped(order=order), stream=f"order-{order}")
        await app.publish(Shipped(order="o1-later"), stream="order-o1")
        await app.worker().drain()
        letters = app.dead_letters
        assert len(await letters.list()) == 4
        assert await letters.skip_error("LookupError: no address", subscription="email") == 2
        # o1-later waited behind o1 in email: it is handled now (and dies in its turn).
        await app.worker().drain()
        assert [h.stream for h in await letters.list(subscription="email")] == ["order-o1"]
        assert await letters.skip_all(subscription="sms") == 2
        assert await letters.list(subscription="sms") == []
        assert await letters.skip_error("KeyError") == 0
        actions = [e.action for e in await app.store.audit_entries()]
        assert actions.count("dlq.skip-error") == 2 and actions.count("dlq.skip-all") == 2


async def test_retry_tells_whether_a_worker_runs_the_subscription(db: Path) -> None:
    async with App("shop", store=f"sqlite:///{db}") as app:
        failing("email", app, RetryPolicy(max_attempts=1))
        await app.publish(Shipped(order="o1"))
        await app.worker().drain()
        assert await app.dead_letters.retry_all(subscription="email") == 1
        assert await app.subscriptions.unattended(["email"]) == ["email"]


async def test_a_dead_letter_keeps_every_attempt_with_its_traceback(db: Path) -> None:
    async with App("shop", store=f"sqlite:///{db}") as app:
        failing("email", app, RetryPolicy(max_attempts=3, immediate=2))
        await app.publish(Shipped(order="o1"))
        await app.worker().drain()
        (dead,) = await app.dead_letters.list()
        shown = await app.dead_letters.show(dead.id)
        assert dead.attempts == 3 and len(shown.held.history) == 3
        for attempt in shown.held.history:
            assert attempt.error == "LookupError: no address for o1"
            assert attempt.traceback is not None and "raise LookupError" in attempt.traceback
