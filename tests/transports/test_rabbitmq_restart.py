"""A RabbitMQ node of the test's own (free loopback ports, its own data directory) restarted
while service A keeps publishing and B keeps consuming: B records and handles every event once,
in order per stream."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tidings import App, Context, Event
from tidings.transports import Routes

#: the server script itself (/usr/sbin's wrapper would run it as the rabbitmq user)
_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
SERVER = _SCRIPT if os.path.exists(_SCRIPT) else None


class Noted(Event, type_name="rrestart.Noted"):
    stream_no: int
    n: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.05)


class Node:
    """``rabbitmq-server`` as a node of its own, on ``port``, its data in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.name = f"tidings{uuid.uuid4().hex[:8]}@localhost"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if SERVER is None:
            if os.environ.get("CI") == "true":
                pytest.fail("rabbitmq-server is required in CI (apt-get install rabbitmq-server)")
            pytest.skip("rabbitmq-server is not installed")
        (self.directory / "log").mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            HOME=str(self.directory),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(_free_port()),
            RABBITMQ_MNESIA_BASE=str(self.directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.directory / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "plugins"),
            RABBITMQ_CONFIG_FILE=str(self.directory / "none"),
        )
        self.proc = await asyncio.create_subprocess_exec(
            SERVER,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await wait_until(lambda: _answers(self.port))

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
            await wait_until(self._closed)

    async def _closed(self) -> bool:
        return not await _answers(self.port)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    found = Node(tmp_path / "rabbitmq")
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


@pytest.mark.slow
async def test_a_broker_restart_loses_and_repeats_nothing(tmp_path: Path, node: Node) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{node.port}/"
    a = App("cinema", store=f"sqlite:///{tmp_path / 'a.db'}")
    a.connect(url, Routes().publish(Noted, topic="notes"), timeout=3.0)
    b = App("payments", store=f"sqlite:///{tmp_path / 'b.db'}")
    b.connect(url, Routes().subscribe("notes", Noted), timeout=3.0)
    seen: list[tuple[int, int]] = []

    @b.subscriber("ledger")
    async def ledger(event: Noted, ctx: Context) -> None:
        seen.append((event.stream_no, event.n))

    async def some_seen() -> bool:
        return bool(seen)

    async def all_seen() -> bool:
        return len(seen) >= total

    total = 600
    workers = [a.worker(lease_ttl=3.0), b.worker(lease_ttl=3.0)]
    async with a, b:
        await b.links[0].open()
        running = [asyncio.create_task(w.run()) for w in workers]
        try:
            for n in range(total):
                await a.publish(Noted(n % 6, n), stream=f"notes-{n % 6}")
                if n == total // 3:
                    await wait_until(some_seen)
                    await node.stop()
                if n == 2 * total // 3:
                    relay = await a.store.partitions("relay:cinema")
                    assert relay[0].position < await a.position()
                    await node.start()
            await wait_until(all_seen, 120)
            await b.caught_up("ledger", timeout=30)
        finally:
            for worker in workers:
                worker.stop()
            await asyncio.gather(*running)
        recorded = await b.read_all(types=[Noted], limit=total * 2)
    assert sorted(seen) == sorted((n % 6, n) for n in range(total))
    for stream_no in range(6):
        numbers = [n for s, n in seen if s == stream_no]
        assert numbers == sorted(numbers), "order per stream was not kept"
    assert len(recorded) == total
