"""Instrumentation: the observer an App is given for metrics and tracing (``instrument(app)``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from tidings.delivery.handling import Handled, Route
from tidings.delivery.observer import Observer
from tidings.errors import Refused

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from tidings.app import App
    from tidings.ops.metrics import Metrics
    from tidings.ops.tracing import Tracing

T = TypeVar("T")


def outcome_of(handled: Handled) -> str:
    """How one handling ended: ``succeeded``, ``refused``, ``parked`` or ``retrying``."""
    if handled.ok:
        return "succeeded"
    if handled.refused is not None:
        return "refused"
    return "parked" if handled.final else "retrying"


#: A sent command's outcome status for each way a handling ends.
_STATUS = {"succeeded": "succeeded", "refused": "refused", "parked": "dead", "retrying": "failed"}


class Instrumentation(Observer):
    """Counts and traces what ``app`` and its workers do: ``metrics`` and ``tracing`` are
    each None when off."""

    def __init__(self, app: App, metrics: Metrics | None, tracing: Tracing | None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing

    # --- deliveries ----------------------------------------------------------------------------

    async def handling(
        self, route: Route, env: Any, attempts: int, run: Callable[[], Awaitable[T]]
    ) -> T:
        started = time.perf_counter()
        if self.tracing is None:
            handled = await run()
        else:
            with self.tracing.handling(route.name, env, attempts) as span:
                handled = await run()
                assert isinstance(handled, Handled)
                self.tracing.finished(span, outcome_of(handled), handled.attempts)
        if self.metrics is not None:
            assert isinstance(handled, Handled)
            self._count(route, env.type, attempts, handled, time.perf_counter() - started)
        return handled

    def _count(
        self, route: Route, message_type: str, attempts: int, handled: Handled, seconds: float
    ) -> None:
        metrics = self.metrics
        assert metrics is not None
        labels = metrics.handler(route.name, message_type)
        outcome = outcome_of(handled)
        failed = handled.attempts - attempts - (outcome in ("succeeded", "refused"))
        if failed > 0:
            metrics.failed.labels(*labels).inc(failed)
        if outcome == "parked":
            metrics.parked.labels(*labels).inc()
        elif outcome == "retrying":
            metrics.retried.labels(*labels).inc()
        else:
            metrics.handled.labels(*labels, outcome).inc()
        metrics.seconds.labels(*labels).observe(seconds)
        if route.command is not None:
            metrics.outcomes.labels(metrics.name, message_type, _STATUS[outcome]).inc()

    async def invoke(self, handler: Any, command: Any, run: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        outcome = "failed"
        span: AbstractContextManager[Any] = (
            nullcontext()
            if self.tracing is None
            else self.tracing.invoking(handler.subscription, command)
        )
        with span as current:
            try:
                result = await run()
                outcome = "succeeded"
                return result
            except Refused:
                outcome = "refused"
                raise
            finally:
                if current is not None and self.tracing is not None:
                    self.tracing.finished(current, outcome)
                if self.metrics is not None:
                    labels = self.metrics.handler(handler.subscription, command.__type_name__)
                    if outcome == "failed":
                        self.metrics.failed.labels(*labels).inc()
                    else:
                        self.metrics.handled.labels(*labels, outcome).inc()
                    self.metrics.seconds.labels(*labels).observe(time.perf_counter() - started)

    def recording(self, verb: str, message: Any) -> AbstractContextManager[object]:
        if self.tracing is None:
            return nullcontext()
        return self.tracing.recording(verb, message)

    def stamp(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        return headers if self.tracing is None else self.tracing.stamp(headers)

    # --- the worker ----------------------------------------------------------------------------

    def partitions_held(self, subscription: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.partitions.labels(self.metrics.name, subscription).set(count)

    def lease_lost(self, subscription: str, partitions: int) -> None:
        if self.metrics is not None and partitions:
            self.metrics.lease_losses.labels(self.metrics.name, subscription).inc(partitions)

    def heartbeat(self, worker: str) -> None:
        if self.metrics is not None:
            self.metrics.heartbeats.labels(self.metrics.name).inc()


def instrument(
    app: App,
    *,
    metrics: bool = True,
    tracing: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> Instrumentation:
    """Count (``metrics``: prometheus-client) and trace (``tracing``: OpenTelemetry, with
    ``tracer_provider`` or the global one) what ``app`` and the workers it makes from now on do.

    Instrumenting an App again adds what was off and returns the same instrumentation."""
    found = app.observer if isinstance(app.observer, Instrumentation) else None
    inst = found or Instrumentation(app, None, None)
    if metrics and inst.metrics is None:
        from tidings.ops.metrics import Metrics

        inst.metrics = Metrics(app)
    if tracing and inst.tracing is None:
        from tidings.ops.tracing import Tracing

        inst.tracing = Tracing(app.name, tracer_provider)
    app.observe(inst)
    return inst
