"""Workers and publishers through PostgreSQL outages, on a private server stopped and started here.

* A handler whose ``ctx.get`` fails because the server is down (a worker process,
  ``RetryPolicy(max_attempts=3)``, a store that gives up after 0.5 s): the message is not
  attempted, held or dead; the worker logs the outage once, with its start and end, and the
  handler's failure; it handles the message within 2 s of the server accepting connections.
* A publish that waits through an outage succeeds within 2 s of the server's return (the pool's
  own reconnect backoff would wait up to 32 s).
* A publish that starts while the pool has no connection gives up after ``retry_timeout`` once,
  not twice, and says how long it waited and for what.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from _outage_app import Ping, build_app
from _private_postgres import PrivatePostgres
from _worker_procs import wait_for

from tidings import App
from tidings.backends.postgres import PostgresStore
from tidings.errors import StoreUnavailable

APP_FILE = Path(__file__).with_name("_outage_app.py")
#: How soon after the server accepts connections again work must resume (issue 20, item 3).
RECOVERY = 2.0
#: How long the server stays down in each test.
OUTAGE = 3.0


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    found = PrivatePostgres()
    try:
        found.start()
        yield found
    finally:
        found.remove()


@pytest.fixture
def running(server: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private server, running at the start of the test and again at its end."""
    if not server.running:
        server.start()
    yield server
    if not server.running:
        server.start()


async def _start_worker(url: str, schema: str, directory: Path) -> asyncio.subprocess.Process:
    env = dict(
        os.environ,
        TIDINGS_OUTAGE_STORE=url,
        TIDINGS_OUTAGE_SCHEMA=schema,
        TIDINGS_OUTAGE_DIR=str(directory),
    )
    with _open_log(directory / "worker.log") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings",
            "worker",
            f"{APP_FILE}:app",
            "--lease-ttl",
            "3",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


async def test_a_handler_failing_in_an_outage_spends_no_attempt(
    running: PrivatePostgres, tmp_path: Path
) -> None:
    schema = f"outage_{uuid.uuid4().hex[:8]}"
    app = build_app(running.url, schema, tmp_path)
    worker_log = tmp_path / "worker.log"

    async def seen() -> list[int]:
        doc = await app.store.get_document("pings", "all")
        return [] if doc is None else list(json.loads(doc)["seen"])

    async with app:
        proc = await _start_worker(running.url, schema, tmp_path)
        try:
            await app.publish(Ping(n=1), stream="pings")
            await wait_for(seen, 30, lambda: f"ping 1 handled:\n{_text(worker_log)}")
            await app.publish(Ping(n=2, wait=True), stream="pings")
            await wait_for(_made(tmp_path / "waiting-2"), 30, "ping 2's handler to wait")
            running.stop()
            (tmp_path / "go-2").touch()  # the handler reads now, with the server down
            await wait_for(_contains(tmp_path / "effects.log", "2\n"), 15, "ping 2's read")
            await asyncio.sleep(OUTAGE)  # the outage lasts: the worker keeps waiting
            running.start()
            back = time.monotonic()
            await wait_for(
                _has(seen, 2),
                15,
                lambda: f"ping 2 handled (parked? see the log):\n{_text(worker_log)}",
            )
            recovered = time.monotonic() - back
            assert await seen() == [1, 2]
            assert await app.store.held() == [], "the message was held or parked"
            assert recovered < RECOVERY, f"handled {recovered:.2f}s after the server came back"
            await wait_for(
                _contains(worker_log, "the store is available again after"),
                10,
                lambda: f"the outage's end to be logged:\n{_text(worker_log)}",
            )
        finally:
            if proc.returncode is None:
                proc.terminate()
            rc = await asyncio.wait_for(proc.wait(), 30)
    text = _text(worker_log)
    assert rc == 0, text
    assert len(re.findall(r"worker \S+: the store is unavailable \(", text)) == 1, text
    assert len(re.findall(r"worker \S+: the store is available again after", text)) == 1, text
    assert "parked" not in text and "holding" not in text, text
    assert re.search(r"counter: the handler of \S*Ping \S+ .* failed because the store", text), text


async def test_a_publish_through_an_outage_succeeds_soon_after_it(
    running: PrivatePostgres,
) -> None:
    store = PostgresStore(running.url, schema=f"outage_{uuid.uuid4().hex[:8]}")
    app = App("publisher", store=store, messages=[Ping])
    async with app:
        await app.publish(Ping(n=1), stream="pings")
        running.stop()
        publishing = asyncio.create_task(app.publish(Ping(n=2), stream="pings"))
        # The outage outlasts the pool's first reconnect delays (1, 2, 4 s doubling).
        await asyncio.sleep(OUTAGE + 1)
        assert not publishing.done(), publishing
        running.start()
        back = time.monotonic()
        await asyncio.wait_for(publishing, 30)
        recovered = time.monotonic() - back
        assert recovered < RECOVERY, f"published {recovered:.2f}s after the server came back"
        assert [e.data for e in await app.store.read_stream("pings")] == [
            b'{"n":1,"wait":false}',
            b'{"n":2,"wait":false}',
        ]


async def test_a_publish_without_a_connection_waits_retry_timeout_once(
    running: PrivatePostgres,
) -> None:
    store = PostgresStore(running.url, schema=f"outage_{uuid.uuid4().hex[:8]}", retry_timeout=2.0)
    app = App("publisher", store=store, messages=[Ping])
    async with app:
        await app.publish(Ping(n=1), stream="pings")
        running.stop()
        with pytest.raises(StoreUnavailable):
            await app.store.last_position()  # the pool's connections are gone now
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await app.publish(Ping(n=2), stream="pings")
        waited = time.monotonic() - started
        running.start()
    message = str(raised.value)
    assert 1.9 < waited < 3.0, f"waited {waited:.2f}s for retry_timeout=2: {message}"
    assert "cannot commit" in message, message
    assert re.search(r"gave up after 2\.\ds", message), message
    assert "retry_timeout=2s" in message, message
    assert "refused" in message or "connect" in message, message


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _made(path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return _is_file(path)

    return check


def _is_file(path: Path) -> bool:
    return path.exists()


def _contains(path: Path, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in _text(path)

    return check


def _has(seen: Callable[[], Awaitable[list[int]]], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            return n in await seen()
        except StoreUnavailable:
            return False

    return check
