"""Prometheus metrics of one App: counted where delivery happens, lag and dead letters read at scrape.

Every App gets its own ``CollectorRegistry`` (a process may hold many Apps, tests do). Counters
are incremented by :class:`~tidings.ops.instrument.Instrumentation` as messages are handled;
gauges that describe the store (lag, dead letters waiting) are computed by :meth:`Metrics.refresh`
from the store just before a scrape, so any process that can read the store shows them right.
Labels are bounded: ``app``, ``subscription``, ``message_type`` (never a stream or message id).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "tidings metrics need prometheus-client: pip install 'tidings[metrics]'"
    ) from exc

from tidings.delivery.subscriptions import Subscriptions
from tidings.records import DEAD, RETRYING, WAITING

if TYPE_CHECKING:
    from tidings.app import App

#: The content type of :meth:`Metrics.render` (Prometheus' text format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Handling-time buckets, in seconds: a handler takes milliseconds, a slow one seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StoreGauges(Collector):
    """The gauges read from the store at the last :meth:`Metrics.refresh`."""

    def __init__(self, app: str) -> None:
        self.app = app
        #: subscription -> (pending, oldest age or None, dead, retrying, waiting)
        self.rows: dict[str, tuple[int, float | None, int, int, int]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["app", "subscription"]
        lag = GaugeMetricFamily(
            "tidings_subscription_lag_messages",
            "Messages of the subscription's types beyond its checkpoints.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "tidings_subscription_lag_seconds",
            "Age of the oldest message the subscription has not handled (0 when none).",
            labels=labels,
        )
        dead = GaugeMetricFamily(
            "tidings_dead_letters",
            "Dead letters waiting for an operator (parked messages).",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "tidings_held_messages",
            "Messages a subscription holds back, by status (retrying, dead, waiting).",
            labels=[*labels, "status"],
        )
        for name, (pending, oldest, parked, retrying, waiting) in sorted(self.rows.items()):
            lag.add_metric([self.app, name], pending)
            age.add_metric([self.app, name], oldest or 0.0)
            dead.add_metric([self.app, name], parked)
            for status, count in ((DEAD, parked), (RETRYING, retrying), (WAITING, waiting)):
                held.add_metric([self.app, name, status], count)
        yield from (lag, age, dead, held)


class Metrics:
    """The metrics of ``app`` in a registry of their own (``registry``)."""

    def __init__(self, app: App, registry: CollectorRegistry | None = None) -> None:
        self.app = app
        self.name = app.name
        self.registry = registry if registry is not None else CollectorRegistry()
        handler = ["app", "subscription", "message_type"]
        reg = self.registry
        self.handled = Counter(
            "tidings_handled",
            "Messages handled to the end, by outcome (succeeded, refused).",
            [*handler, "outcome"],
            registry=reg,
        )
        self.failed = Counter(
            "tidings_failed", "Failed attempts at handling a message.", handler, registry=reg
        )
        self.retried = Counter(
            "tidings_retried",
            "Messages held for a later retry after a failed attempt.",
            handler,
            registry=reg,
        )
        self.parked = Counter(
            "tidings_parked", "Messages parked as dead letters.", handler, registry=reg
        )
        self.seconds = Histogram(
            "tidings_handling_seconds",
            "Time to handle a message, its immediate retries included.",
            handler,
            buckets=BUCKETS,
            registry=reg,
        )
        self.outcomes = Counter(
            "tidings_command_outcomes",
            "Outcomes of sent commands, by status (succeeded, refused, failed, dead).",
            ["app", "message_type", "status"],
            registry=reg,
        )
        self.partitions = Gauge(
            "tidings_worker_partitions",
            "Partitions this process's worker holds, by subscription.",
            ["app", "subscription"],
            registry=reg,
        )
        self.lease_losses = Counter(
            "tidings_lease_losses",
            "Partitions whose lease this process's worker lost to another worker.",
            ["app", "subscription"],
            registry=reg,
        )
        self.heartbeats = Counter(
            "tidings_worker_heartbeats",
            "Heartbeats (lease renewals) of this process's worker.",
            ["app"],
            registry=reg,
        )
        self._store = _StoreGauges(self.name)
        reg.register(self._store)

    def handler(self, subscription: str, message_type: str) -> tuple[str, str, str]:
        """The labels of one handler and message type."""
        return (self.name, subscription, message_type)

    async def refresh(self) -> None:
        """Read lag and held messages of every subscription from the store."""
        app = self.app
        states = await Subscriptions(app.store, app.handlers, app.services, app.open).list()
        counts: dict[tuple[str, str], int] = {
            (sub, status): n for sub, status, n in await app.store.held_counts()
        }
        self._store.rows = {
            s.name: (
                s.pending or 0,
                s.oldest_age,
                counts.get((s.name, DEAD), 0),
                s.parked - counts.get((s.name, DEAD), 0),
                s.waiting,
            )
            for s in states
        }

    async def render(self) -> bytes:
        """The registry in Prometheus' text format, refreshed from the store."""
        await self.refresh()
        return generate_latest(self.registry)

    def value(self, name: str, **labels: Any) -> float | None:
        """One sample's value (tests, the console): ``name`` as exposed, e.g. ``tidings_parked_total``."""
        labels.setdefault("app", self.name)
        return self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
