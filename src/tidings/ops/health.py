"""Health probes and metrics over HTTP: ``/healthz``, ``/readyz``, ``/metrics`` as Starlette routes.

:func:`probe_routes` gives the three routes for any Starlette application (the web console
mounts them); :func:`serve_probes` serves them alone with uvicorn in this process (``tidings
worker --metrics-port``), bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "tidings probes need starlette and uvicorn: pip install 'tidings[web]'"
    ) from exc

from tidings.delivery.worker import Worker
from tidings.errors import ConfigurationError
from tidings.ops.instrument import instrument
from tidings.ops.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from tidings.app import App

log = logging.getLogger("tidings.ops")

#: How long ``/readyz`` waits for the store before it calls it unreachable.
STORE_TIMEOUT = 2.0


async def readiness(app: App, worker: Worker | None = None) -> dict[str, str]:
    """Each readiness check with ``ok`` or what is wrong: the store reachable, its migrations
    applied (the store opened, which applies them), and ``worker`` holding its leases."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(app.open(), STORE_TIMEOUT)
        checks["migrations"] = "ok"
        await asyncio.wait_for(app.store.now(), STORE_TIMEOUT)
        checks["store"] = "ok"
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        checks.setdefault("migrations", f"not known: the store did not open ({problem})")
        checks["store"] = f"unreachable: {problem}"
    if worker is not None:
        checks["worker"] = (
            "ok"
            if worker.holds_leases
            else f"worker {worker.id} has not renewed its leases within {worker.lease_ttl:g}s"
        )
    return checks


def probe_routes(app: App, worker: Worker | None = None) -> list[Route]:
    """``/healthz`` (the process answers), ``/readyz`` (see :func:`readiness`; 503 unless all
    is ok) and ``/metrics`` (``app``'s Prometheus metrics; instruments it, and ``worker`` when
    it has not started yet, when they are not)."""
    inst = instrument(app)
    metrics = inst.metrics
    assert metrics is not None
    if worker is not None and worker.observer is None:
        worker.observer = inst

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "app": app.name})

    async def readyz(request: Request) -> Response:
        checks = await readiness(app, worker)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def metrics_page(request: Request) -> Response:
        try:
            body = await metrics.render()
        except Exception as exc:
            return PlainTextResponse(f"# the store cannot be read: {exc}\n", status_code=503)
        return Response(body, media_type=CONTENT_TYPE)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ]


class _Server(uvicorn.Server):
    """uvicorn in a process that handles its own signals (the worker stops on SIGTERM)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve_probes(
    app: App, worker: Worker | None = None, *, port: int, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve :func:`probe_routes` on ``host:port`` while the block runs; yields the port
    (useful with ``port=0``)."""
    config = uvicorn.Config(
        Starlette(routes=probe_routes(app, worker)),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="tidings:probes")
    while not server.started:
        if task.done():
            try:
                task.result()
            except (SystemExit, Exception) as exc:
                raise ConfigurationError(
                    f"cannot serve the probes on {host}:{port} ({exc!r}): is the port taken?"
                ) from None
            raise ConfigurationError(f"cannot serve the probes on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    log.info("probes and metrics on http://%s:%d/ (healthz, readyz, metrics)", host, bound)
    try:
        yield int(bound)
    finally:
        server.should_exit = True
        await task
