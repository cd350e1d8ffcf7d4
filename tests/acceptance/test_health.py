"""Health probes and metrics over HTTP: in-process routes, and ``tidings worker --metrics-port``
as an operator starts it (a subprocess, scraped over loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tidings import App, Context, Event
from tidings.ops.alerts import recent_alerts
from tidings.ops.health import serve_probes


class Shipped(Event):
    order: str


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def aget(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_readyz_follows_the_worker_s_leases_and_the_store(tmp_path: Path) -> None:
    app = App("shop", store=f"sqlite:///{tmp_path / 'shop.db'}")

    @app.subscriber("email")
    def email(event: Shipped, ctx: Context) -> None:
        pass

    async with app:
        worker = app.worker(lease_ttl=1.0)
        async with serve_probes(app, worker, port=0) as port:
            base = f"http://127.0.0.1:{port}"
            assert await aget(f"{base}/healthz") == (200, '{"status":"ok","app":"shop"}')
            status, body = await aget(f"{base}/readyz")
            assert status == 503  # the worker has not renewed any lease yet
            assert json.loads(body)["checks"] == {
                "migrations": "ok",
                "store": "ok",
                "worker": f"worker {worker.id} has not renewed its leases within 1s",
            }
            running = asyncio.create_task(worker.run())
            try:
                await wait_for(lambda: worker.holds_leases)
                status, body = await aget(f"{base}/readyz")
                assert (status, json.loads(body)["ready"]) == (200, True)
                status, text = await aget(f"{base}/metrics")
                assert status == 200
                assert 'tidings_worker_partitions{app="shop",subscription="email"} 8.0' in text
            finally:
                worker.stop()
                await running


async def test_readyz_says_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    app = App("shop", store=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'shop.db'}")
    async with serve_probes(app, port=0) as port:
        status, body = await aget(f"http://127.0.0.1:{port}/readyz")
        healthy, _ = await aget(f"http://127.0.0.1:{port}/healthz")
    checks = json.loads(body)["checks"]
    assert status == 503 and healthy == 200
    assert checks["store"].startswith("unreachable: ")
    assert checks["migrations"].startswith("not known: the store did not open")


APP = """
from tidings import App, Context, Event
from tidings.delivery.policy import RetryPolicy

class Shipped(Event):
    order: str

app = App("shop", store="sqlite:///{db}")

@app.subscriber("email", policy=RetryPolicy(max_attempts=1, immediate=0), critical=True)
def email(event: Shipped, ctx: Context) -> None:
    if event.order.startswith("bad"):
        raise RuntimeError("smtp down")
"""


async def test_the_worker_serves_probes_and_metrics_on_its_port(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    (tmp_path / "shop_app.py").write_text(textwrap.dedent(APP.format(db=db)))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        "worker",
        "shop_app:app",
        "--metrics-port",
        str(port),
        "--lease-ttl",
        "2",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.returncode is None, (tmp_path / "worker.log").read_text()
            try:
                return get(f"{base}/readyz")[0] == 200
            except OSError:
                return False

        await wait_for(ready)
        async with App("shop", store=f"sqlite:///{db}") as app:
            await app.publish(Shipped("o1"), stream="order-o1")
            await app.publish(Shipped("bad1"), stream="order-bad1")

            def parked() -> bool:
                return (
                    'tidings_dead_letters{app="shop",subscription="email"} 1.0'
                    in get(f"{base}/metrics")[1]
                )

            await wait_for(parked)
            deadline = time.monotonic() + 10
            while not (alerts := await recent_alerts(app.store)):
                assert time.monotonic() < deadline, "no alert was stored"
                await asyncio.sleep(0.05)
        text = get(f"{base}/metrics")[1]
        labels = 'app="shop",message_type="Shipped",subscription="email"'
        handled = 'app="shop",message_type="Shipped",outcome="succeeded",subscription="email"'
        assert f"tidings_handled_total{{{handled}}} 1.0" in text
        assert f"tidings_parked_total{{{labels}}} 1.0" in text
        assert 'tidings_worker_heartbeats_total{app="shop"}' in text
        assert [(a.kind, a.severity) for a in alerts] == [("message-parked", "critical")]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, (tmp_path / "worker.log").read_text()
        log.close()
    # The worker is gone: so are its probes.
    try:
        get(f"{base}/healthz")
        raise AssertionError("the probes outlived the worker")
    except OSError:
        pass
