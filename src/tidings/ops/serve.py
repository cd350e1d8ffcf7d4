"""A worker run as an operator runs it: with its probes and metrics, alert sinks and monitor."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from tidings.ops.alerts import Monitor, send_alerts
from tidings.ops.instrument import instrument

if TYPE_CHECKING:
    from tidings.app import App


async def run_worker(
    app: App,
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    webhook: str | None = None,
    lag_seconds: float = 300.0,
    tracing: bool = False,
    handle_signals: bool = True,
    **options: Any,
) -> None:
    """Run a worker of ``app`` until SIGTERM/SIGINT: its alerts kept in the store (and POSTed to
    ``webhook``), the lag and lost-worker rules watched, and, with ``metrics_port``,
    ``/healthz``, ``/readyz`` and ``/metrics`` served on ``metrics_host``; with ``tracing``,
    spans made with the global OpenTelemetry tracer provider."""
    if metrics_port is not None or tracing:
        instrument(app, metrics=metrics_port is not None, tracing=tracing)
    _, sink = send_alerts(app, webhook=webhook)
    worker = app.worker(**options)
    stop = asyncio.Event()
    monitor = asyncio.create_task(Monitor(app, lag_seconds=lag_seconds).run(stop))
    try:
        async with contextlib.AsyncExitStack() as stack:
            if metrics_port is not None:
                from tidings.ops.health import serve_probes

                await stack.enter_async_context(
                    serve_probes(app, worker, port=metrics_port, host=metrics_host)
                )
            await worker.run(handle_signals=handle_signals)
    finally:
        stop.set()
        await monitor
        if sink is not None:
            await sink.aclose()
