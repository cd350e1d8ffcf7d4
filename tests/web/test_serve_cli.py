"""``tidings serve`` as an operator starts it: a subprocess on loopback, read-only without a
token, changes with it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tidings import App, Event

SRC = str(Path(__file__).resolve().parents[2] / "src")


class Noted(Event):
    text: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", *args, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": SRC, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url + "/api/overview", timeout=1)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0].decode()
                raise AssertionError(f"tidings serve did not start: {out}") from None
            time.sleep(0.1)


def test_serve_a_store_read_only_then_with_a_token(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"

    async def setup() -> None:
        async with App("notes", store=f"sqlite:///{db}") as app:
            await app.publish(Noted(text="hello"), stream="notes-1")
            await app.store.setup_subscription("notes-view", 1, 0)

    asyncio.run(setup())
    proc, url = _serve(["--store", f"sqlite:///{db}"], {"TIDINGS_CONSOLE_TOKEN": ""})
    try:
        overview = httpx.get(url + "/api/overview").json()
        assert overview["last_position"] == 1
        assert [s["state"] for s in overview["subscriptions"]] == ["stopped"]
        refused = httpx.post(url + "/api/subscriptions/notes-view/pause")
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert "hello" in httpx.get(url + "/messages/1").text
        assert httpx.get(url + "/api/topology").json()["registrations"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    proc, url = _serve(["--store", f"sqlite:///{db}"], {"TIDINGS_CONSOLE_TOKEN": "t0ken"})
    try:
        headers = {"Authorization": "Bearer t0ken", "X-Tidings-Operator": "ops"}
        done = httpx.post(url + "/api/subscriptions/notes-view/pause", headers=headers)
        assert done.status_code == 200, done.text
        assert httpx.get(url + "/api/audit").json()[0]["actor"] == "ops"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


SHOP_CORE = """\
from tidings import App, Command, Context, Event


class PlaceOrder(Command):
    item: str


class OrderPlaced(Event):
    item: str


app = App("shop", store="memory://")


@app.command
async def place_order(cmd: PlaceOrder, ctx: Context) -> None:
    ctx.publish(OrderPlaced(item=cmd.item), stream="orders")
"""

SHOP = """\
from shop_core import PlaceOrder, app


async def route(item: str) -> None:
    await app.invoke(PlaceOrder(item=item))
"""


def test_the_map_reads_the_served_module_as_tidings_check_does(tmp_path: Path) -> None:
    (tmp_path / "shop_core.py").write_text(SHOP_CORE)
    (tmp_path / "shop.py").write_text(SHOP)
    target = f"{tmp_path / 'shop.py'}:app"
    checked = subprocess.run(
        [sys.executable, "-m", "tidings", "check", target, "--format", "json"],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected = json.loads(checked.stdout)
    # Only the target's module (no handler there) says that a route invokes PlaceOrder.
    assert [f["rule"] for f in expected["findings"]] == ["TD003"]
    proc, url = _serve([target], {"TIDINGS_CONSOLE_TOKEN": ""})
    try:
        found = httpx.get(url + "/api/topology", timeout=30).json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert found["findings"] == expected["findings"]
    assert any(e["label"] == "invokes" for e in found["map"]["edges"])
