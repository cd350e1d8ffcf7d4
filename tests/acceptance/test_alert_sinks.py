"""Alerts reach their sinks: a webhook (a real HTTP server on loopback), the stored record any
process reads, and the rules a monitor watches over the store (lag, a lost worker)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tidings import App, Command, Context, Event
from tidings.delivery.policy import RetryPolicy
from tidings.ops.alerts import Monitor, StoredAlerts, WebhookSink, recent_alerts, send_alerts
from tidings.store import Store


class Shipped(Event):
    order: str


class Refund(Command):
    order: str


class Receiver:
    """A webhook endpoint: answers ``fail_first`` requests with 500, then records each body
    with the monotonic time it arrived."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.requests = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received.append((time.monotonic(), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if not isinstance(found, bool):
            found = await found
        if found:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


Stores = Callable[[], "str | Store"]


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    """Makes stores over one database (SQLite file, PostgreSQL schema), one per App."""
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / 'shop.db'}"
    from tidings.backends.postgres import PostgresStore

    url = request.getfixturevalue("postgres_url")
    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(url, schema=schema)


async def test_a_parked_message_reaches_the_webhook_within_five_seconds(stores: Stores) -> None:
    app = App("shop", store=stores())
    attempts: list[float] = []

    @app.subscriber("email", policy=RetryPolicy(max_attempts=3, immediate=2), critical=True)
    def email(event: Shipped, ctx: Context) -> None:
        attempts.append(time.monotonic())
        raise RuntimeError("smtp down")

    with Receiver(fail_first=1) as receiver:
        _, sink = send_alerts(app, webhook=receiver.url)
        assert sink is not None
        sink.backoff = 0.05
        async with app:
            worker = app.worker(idle_poll=0.05)
            running = asyncio.create_task(worker.run())
            try:
                await app.publish(Shipped("o1"), stream="order-o1")
                await wait_until(lambda: bool(receiver.received), timeout=5.0)
            finally:
                worker.stop()
                await running
                await sink.aclose()
    arrived, body = receiver.received[0]
    latency = arrived - attempts[-1]
    print(f"\nlast failed attempt -> webhook: {latency * 1000:.1f} ms (one 500 retried)")
    assert 0 < latency < 5.0
    assert len(attempts) == 3 and receiver.requests == 2
    assert body["app"] == "shop" and body["kind"] == "message-parked"
    assert body["severity"] == "critical" and body["subscription"] == "email"
    assert body["error"] == "RuntimeError: smtp down" and body["attempts"] == 3


async def test_a_webhook_that_is_down_never_blocks_delivery(stores: Stores) -> None:
    app = App("shop", store=stores())
    handled: list[str] = []

    @app.subscriber("email", policy=RetryPolicy(max_attempts=1, immediate=0))
    def email(event: Shipped, ctx: Context) -> None:
        if event.order.startswith("bad"):
            raise RuntimeError("smtp down")
        handled.append(event.order)

    # Nothing listens on this port: every POST fails (connection refused), and is retried.
    with Receiver() as closed:
        url = closed.url
    sink = WebhookSink(url, retries=2, backoff=10.0, queue_size=2)
    app.on_alert(sink)
    async with app:
        for n in range(4):
            await app.publish(Shipped(f"bad{n}"), stream=f"order-bad{n}")
        await app.publish(Shipped("o1"), stream="order-o1")
        started = time.monotonic()
        await app.worker().drain()
        assert time.monotonic() - started < 5.0  # backoff is 10 s: nobody waited for it
        await sink.aclose(timeout=0.1)
    assert handled == ["o1"]
    assert sink.sent == 0 and sink.dropped >= 1  # a bounded queue: the overflow is dropped


async def test_stored_alerts_are_read_from_another_app_newest_first(stores: Stores) -> None:
    app = App("shop", store=stores())

    @app.subscriber("email", policy=RetryPolicy(max_attempts=1, immediate=0))
    def email(event: Shipped, ctx: Context) -> None:
        raise RuntimeError(f"cannot mail {event.order}")

    @app.command(policy=RetryPolicy(max_attempts=1, immediate=0))
    def refund(cmd: Refund, ctx: Context) -> None:
        raise RuntimeError("bank down")

    app.on_alert(StoredAlerts(app))
    async with app:
        await app.publish(Shipped("o1"), stream="order-o1")
        await app.worker().drain()
        await app.publish(Shipped("o2"), stream="order-o2")
        await app.send(Refund("o1"))
        await app.worker().drain()
    async with App("console", store=stores()) as other:
        found = await recent_alerts(other.store)
        assert sorted(a.kind for a in found) == ["command-dead", "message-parked", "message-parked"]
        assert found[-1].error == "RuntimeError: cannot mail o1"  # the oldest last
        assert [a.at for a in found] == sorted((a.at for a in found), reverse=True)
        dead = next(a for a in found if a.kind == "command-dead")
        assert dead.severity == "critical" and dead.type == "Refund"
        assert len(await recent_alerts(other.store, limit=1)) == 1


async def test_stored_alerts_keep_only_the_latest(tmp_path: Path) -> None:
    async with App("shop", store=f"sqlite:///{tmp_path / 'a.db'}") as app:
        stored = StoredAlerts(app, keep=3)
        for n in range(7):
            await stored(_alert(f"e{n}", at=1000.0 + n))
        await stored.prune()
        found = await recent_alerts(app.store)
    assert [a.error for a in found] == ["e6", "e5", "e4"]


def _alert(error: str, at: float) -> Any:
    from tidings.delivery.alerts import Alert

    return Alert("message-parked", "email", "m", "Shipped", "s", error, 1, at)


async def test_the_monitor_alerts_once_on_lag_and_on_a_lost_worker(stores: Stores) -> None:
    app = App("shop", store=stores())

    @app.subscriber("email")
    def email(event: Shipped, ctx: Context) -> None:
        pass

    fired: list[Any] = []
    app.on_alert(fired.append)
    monitor = Monitor(app, lag_seconds=0.2, interval=0.05)
    async with app:
        await app.worker().drain()  # the subscription exists, caught up
        await app.publish(Shipped("o1"), stream="order-o1")
        assert await monitor.check() == []  # not old enough yet
        await wait_until(lambda: _fired(monitor, fired, "lag"))
        assert await monitor.check() == []  # once until it clears
        lag = next(a for a in fired if a.kind == "lag")
        assert lag.subscription == "email" and lag.severity == "warning"
        assert "over 0.2s" in lag.error
        await app.worker().drain()
        assert await monitor.check() == []
        # A worker takes partitions with a short lease, then dies without releasing them.
        await app.store.heartbeat("dead-worker", 0.1)
        assert await app.store.claim("email", "dead-worker", 8, 0.1)
        await wait_until(lambda: _fired(monitor, fired, "worker-lost"))
        lost = next(a for a in fired if a.kind == "worker-lost")
        assert lost.subscription == "dead-worker" and lost.severity == "critical"
        assert await monitor.check() == []
        await app.store.release("dead-worker")
        assert await monitor.check() == []


async def _fired(monitor: Monitor, fired: list[Any], kind: str) -> bool:
    await monitor.check()
    return any(a.kind == kind for a in fired)
