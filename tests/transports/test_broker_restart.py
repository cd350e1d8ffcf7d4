"""A broker of the test's own (a NATS server with JetStream on a file store; a RabbitMQ node with
its own data directory; free loopback ports) stopped and started again while service A keeps
publishing: B records and handles every event once, in order per stream."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest
from _brokers import free_port, listening, running, wait_until

from tidings import App, Context, Event
from tidings.transports import Routes

#: the RabbitMQ server script itself (/usr/sbin's wrapper would run it as the rabbitmq user)
_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ_SERVER = _SCRIPT if os.path.exists(_SCRIPT) else None


class Noted(Event, type_name="restart.Noted"):
    stream_no: int
    n: int


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI (apt-get install {what})")
    pytest.skip(f"{what} is not installed")


class Restartable(Protocol):
    url: str
    #: what ``app.connect`` needs to notice the broker gone and back soon
    options: dict[str, Any]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class NatsServer:
    """``nats-server -js`` on a free port with its store in ``directory``."""

    def __init__(self, directory: Path) -> None:
        port = free_port()
        self.port, self.directory = port, directory
        self.url = f"nats://127.0.0.1:{port}"
        self.options: dict[str, Any] = {"ack_wait": 2.0}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            _missing("nats-server")
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.directory)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_until(lambda: listening(self.port), 30)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


class RabbitMQNode:
    """``rabbitmq-server`` as a node of its own on a free port, its data in ``directory``."""

    def __init__(self, directory: Path) -> None:
        port = free_port()
        self.port, self.directory = port, directory
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/"
        self.options: dict[str, Any] = {"timeout": 3.0}
        self.name = f"tidings{uuid.uuid4().hex[:8]}@localhost"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if RABBITMQ_SERVER is None:
            _missing("rabbitmq-server")
        (self.directory / "log").mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            HOME=str(self.directory),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_MNESIA_BASE=str(self.directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.directory / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "plugins"),
            RABBITMQ_CONFIG_FILE=str(self.directory / "none"),
        )
        self.proc = await asyncio.create_subprocess_exec(
            RABBITMQ_SERVER,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await wait_until(lambda: listening(self.port), 60)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
            await wait_until(self._closed, 60)

    async def _closed(self) -> bool:
        return not await listening(self.port)


@pytest.fixture(params=["nats", pytest.param("rabbitmq", marks=pytest.mark.slow)])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Restartable]:
    """A broker of the test's own, started; stopped after the test."""
    found: Restartable
    if request.param == "nats":
        found = NatsServer(tmp_path / "nats")
    else:
        found = RabbitMQNode(tmp_path / "rabbitmq")
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


async def test_a_broker_restart_loses_and_repeats_nothing(
    tmp_path: Path, broker: Restartable
) -> None:
    a = App("cinema", store=f"sqlite:///{tmp_path / 'a.db'}")
    a.connect(broker.url, Routes().publish(Noted, topic="notes"), **broker.options)
    b = App("payments", store=f"sqlite:///{tmp_path / 'b.db'}")
    b.connect(broker.url, Routes().subscribe("notes", Noted), **broker.options)
    seen: list[tuple[int, int]] = []

    @b.subscriber("ledger")
    async def ledger(event: Noted, ctx: Context) -> None:
        seen.append((event.stream_no, event.n))

    async def some_seen() -> bool:
        return bool(seen)

    async def all_seen() -> bool:
        return len(seen) >= total

    total = 600
    async with a, b:
        await b.links[0].open()  # its queue exists: a topic keeps nothing for a missing one
        async with running(a, b):
            for n in range(total):
                await a.publish(Noted(n % 6, n), stream=f"notes-{n % 6}")
                if n == total // 3:
                    await wait_until(some_seen)
                    await broker.stop()
                if n == 2 * total // 3:
                    # What was published while the broker was down waits in A's log.
                    relay = await a.store.partitions("relay:cinema")
                    assert relay[0].position < await a.position()
                    await broker.start()
            await wait_until(all_seen, 120)
            await b.caught_up("ledger", timeout=30)
        recorded = await b.read_all(types=[Noted], limit=total * 2)
    assert sorted(seen) == sorted((n % 6, n) for n in range(total))
    for stream_no in range(6):
        numbers = [n for s, n in seen if s == stream_no]
        assert numbers == sorted(numbers), "order per stream was not kept"
    assert len(recorded) == total
