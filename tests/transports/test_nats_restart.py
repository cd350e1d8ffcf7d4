"""A NATS server of the test's own (JetStream on a file store, a free loopback port) stopped and
started again while service A keeps publishing: B records and handles every event once, in
order per stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tidings import App, Context, Event
from tidings.transports import Routes


class Noted(Event, type_name="restart.Noted"):
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


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.02)


class Server:
    """``nats-server -js`` on ``port`` with its store in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("nats-server is required in CI (apt-get install nats-server)")
            pytest.skip("nats-server is not installed")
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.directory),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_until(lambda: _answers(self.port))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    found = Server(tmp_path / "nats")
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


async def test_a_server_restart_loses_and_repeats_nothing(tmp_path: Path, server: Server) -> None:
    url = f"nats://127.0.0.1:{server.port}"
    a = App("cinema", store=f"sqlite:///{tmp_path / 'a.db'}")
    a.connect(url, Routes().publish(Noted, topic="notes"), ack_wait=2.0)
    b = App("payments", store=f"sqlite:///{tmp_path / 'b.db'}")
    b.connect(url, Routes().subscribe("notes", Noted), ack_wait=2.0)
    seen: list[tuple[int, int]] = []

    @b.subscriber("ledger")
    async def ledger(event: Noted, ctx: Context) -> None:
        seen.append((event.stream_no, event.n))

    total = 600
    workers = [a.worker(lease_ttl=3.0), b.worker(lease_ttl=3.0)]
    async with a, b:
        running = [asyncio.create_task(w.run()) for w in workers]

        async def some_seen() -> bool:
            return bool(seen)

        try:
            for n in range(total):
                await a.publish(Noted(n % 6, n), stream=f"notes-{n % 6}")
                if n == total // 3:
                    await wait_until(some_seen)
                    await server.stop()
                if n == 2 * total // 3:
                    # What was published while the server was down waits in A's log.
                    relay = await a.store.partitions("relay:cinema")
                    assert relay[0].position < await a.position()
                    await server.start()

            async def all_seen() -> bool:
                return len(seen) >= total

            await wait_until(all_seen, 90)
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
