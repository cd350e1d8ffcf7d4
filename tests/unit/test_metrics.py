"""Prometheus metrics of an App: counted as messages are handled, lag and dead letters read from
the store at scrape time (so another process reading the store shows them too)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tidings import App, Command, Context, Event, Refused
from tidings.delivery.policy import RetryPolicy
from tidings.ops import instrument
from tidings.store import Store


class Shipped(Event):
    order: str


class Charge(Command):
    order: str


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


def shop(store: str | Store) -> App:
    app = App("shop", store=store)
    once = RetryPolicy(max_attempts=1, immediate=0)

    @app.subscriber("email", policy=once)
    def email(event: Shipped, ctx: Context) -> None:
        if event.order.startswith("bad"):
            raise RuntimeError("smtp down")

    @app.subscriber("slow", policy=RetryPolicy(max_attempts=3, immediate=1, backoff=60))
    def slow(event: Shipped, ctx: Context) -> None:
        if event.order.startswith("bad"):
            raise RuntimeError("not yet")

    @app.command(policy=once)
    def charge(cmd: Charge, ctx: Context) -> str:
        if cmd.order == "refuse":
            raise Refused("no card")
        if cmd.order == "bad":
            raise RuntimeError("bank down")
        return "ok"

    return app


async def test_handlings_are_counted_by_outcome_and_timed(stores: Stores) -> None:
    app = shop(stores())
    metrics = instrument(app).metrics
    assert metrics is not None
    async with app:
        for order in ("o1", "o2", "bad1"):
            await app.publish(Shipped(order), stream=f"order-{order}")
        for order in ("o1", "refuse", "bad"):
            await app.send(Charge(order))
        await app.worker().drain()
        assert await app.invoke(Charge("o9")) == "ok"
        with pytest.raises(Refused):
            await app.invoke(Charge("refuse"))

    def value(name: str, **labels: str) -> float | None:
        return metrics.value(name, **labels)

    email = {"subscription": "email", "message_type": "Shipped"}
    assert value("tidings_handled_total", outcome="succeeded", **email) == 2
    assert value("tidings_parked_total", **email) == 1
    assert value("tidings_failed_total", **email) == 1
    assert value("tidings_handling_seconds_count", **email) == 3
    slow = {"subscription": "slow", "message_type": "Shipped"}
    # one immediate retry, then held for a later retry: two failed attempts, one retried
    assert value("tidings_failed_total", **slow) == 2
    assert value("tidings_retried_total", **slow) == 1
    assert value("tidings_parked_total", **slow) is None
    outcomes = {"message_type": "Charge"}
    assert value("tidings_command_outcomes_total", status="succeeded", **outcomes) == 1
    assert value("tidings_command_outcomes_total", status="refused", **outcomes) == 1
    assert value("tidings_command_outcomes_total", status="dead", **outcomes) == 1
    # invoked: counted under the handler's subscription name too
    cmd = {"subscription": "cmd:Charge", "message_type": "Charge"}
    assert value("tidings_handled_total", outcome="succeeded", **cmd) == 2
    assert value("tidings_handled_total", outcome="refused", **cmd) == 2
    assert value("tidings_worker_heartbeats_total") is None  # drain() has no heartbeat


async def test_lag_and_dead_letters_are_read_from_the_store_at_scrape(stores: Stores) -> None:
    app = shop(stores())
    async with app:
        for order in ("o1", "bad1", "o2"):
            await app.publish(Shipped(order), stream=f"order-{order}")
        await app.worker().drain()
        await app.publish(Shipped("o3"), stream="order-o3")
        await app.publish(Shipped("o4"), stream="order-bad1")  # waits behind the parked one
    # Another process (another App over the same store) scrapes: nothing was counted there.
    observer = shop(stores())
    metrics = instrument(observer).metrics
    assert metrics is not None
    async with observer:
        text = (await metrics.render()).decode()
    assert 'tidings_dead_letters{app="shop",subscription="email"} 1.0' in text
    assert 'tidings_subscription_lag_messages{app="shop",subscription="email"} 2.0' in text
    assert 'tidings_held_messages{app="shop",status="retrying",subscription="slow"} 1.0' in text
    lag = metrics.value("tidings_subscription_lag_seconds", subscription="email")
    assert lag is not None and 0 <= lag < 60
    assert (
        metrics.value(
            "tidings_handled_total",
            subscription="email",
            message_type="Shipped",
            outcome="succeeded",
        )
        is None
    )


async def test_the_sample_alerting_rules_use_metrics_that_exist(tmp_path: Path) -> None:
    rules = (Path(__file__).parents[2] / "docs" / "prometheus-alerts.yml").read_text()
    used = set(re.findall(r"\b(tidings_[a-z_]+)", rules))
    app = shop(f"sqlite:///{tmp_path / 'shop.db'}")
    metrics = instrument(app).metrics
    assert metrics is not None
    async with app:
        await app.publish(Shipped("bad1"), stream="order-bad1")
        await app.send(Charge("bad"))
        await app.worker().drain()
        text = (await metrics.render()).decode()
    exposed = set(re.findall(r"^# TYPE (tidings_[a-z_]+) (\w+)", text, flags=re.M))
    names = {n for n, _ in exposed} | {f"{n}_total" for n, kind in exposed if kind == "counter"}
    assert used and used <= names, used - names
