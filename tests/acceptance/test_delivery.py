"""Delivery as a user meets it: poison messages, dead letters and their repair, catch-up, exactly-once
effects through ``ctx``, and the refusal to start a worker that cannot deliver everything.

Every test runs on ``memory://`` and on a SQLite file. Where a test needs a second ``App`` on the
same store (a restart, a new deployment), the memory variant shares one ``MemoryStore`` object.
Delayed retries use backoffs of a few hundredths of a second and are driven by ``worker.drain()``
until a condition holds (with a deadline), never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidings import App, Command, ConfigurationError, Context, Event, Refused, TidingsError
from tidings.backends.memory import MemoryStore
from tidings.delivery.policy import RetryPolicy
from tidings.delivery.worker import Worker
from tidings.ids import uuid7
from tidings.messages import NewMessage
from tidings.records import AppendOp, Transaction


class Ordered(Event, type_name="dlv.Ordered"):
    order: str
    n: int


class Noted(Event, type_name="dlv.Noted"):
    note: str


class Orphan(Command, type_name="dlv.Orphan"):
    what: str


# --- the two backends -----------------------------------------------------------------------


@dataclass
class Backend:
    """Where a test's apps keep their store; ``app()`` may be called again for a "restart"."""

    kind: str
    path: Path
    memory: MemoryStore | None = None
    apps: list[App] = field(default_factory=list)
    postgres: str | None = None

    @property
    def url(self) -> str:
        return self.postgres if self.postgres is not None else f"sqlite:///{self.path}"

    def app(self, name: str = "shop") -> App:
        app = App(name, store=self.memory if self.memory is not None else self.url)
        self.apps.append(app)
        return app


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = request.param
    found = Backend(kind, tmp_path / "shop.db", MemoryStore() if kind == "memory" else None)
    if kind == "postgres":
        schema = request.getfixturevalue("pg_schema")
        found.postgres = f"{request.getfixturevalue('postgres_url')}?schema={schema}"
    yield found
    for app in found.apps:
        await app.close()


def tidings(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


async def drain_until(
    worker: Worker,
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    state: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Drain again and again until ``condition`` holds; fail after ``timeout`` seconds (saying
    what ``state`` was then)."""
    deadline = time.monotonic() + timeout
    while True:
        await worker.drain()
        if await condition():
            return
        if time.monotonic() > deadline:
            found = await state() if state is not None else ""
            raise AssertionError(f"condition not met within {timeout}s; {found}")
        await asyncio.sleep(0.005)  # pace the polling; the condition is what we wait for


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 10.0,
    state: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Poll ``condition`` (while a worker runs in the background) until it holds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            found = await state() if state is not None else ""
            raise AssertionError(f"condition not met within {timeout}s; {found}")
        await asyncio.sleep(0.01)


async def held_rows(app: App) -> list[tuple[int, str, str, int, str | None]]:
    """Every held message, briefly: (global position, stream, status, attempts, error)."""
    return [
        (h.global_position, h.stream, h.status, h.attempts, h.error)
        for h in await app.dead_letters.list(status=None)
    ]


def audit_actor_default() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


# --- poison messages: park, wait behind, repair -------------------------------------------------

STREAMS = [f"order-{i:03d}" for i in range(200)]
POISONED = ("order-017", "order-123")  # 1% of the streams
POISON_N = 2  # the message of a poisoned stream that always fails
PER_STREAM = 5
MAX_ATTEMPTS = 4


def charge_card(order: str, n: int) -> None:
    raise RuntimeError(f"card declined for {order} #{n}")


async def publish_interleaved(app: App, streams: list[str], per_stream: int) -> None:
    """Round n publishes message n of every stream: streams interleave in the log."""
    for n in range(1, per_stream + 1):
        await asyncio.gather(*(app.publish(Ordered(order=s, n=n), stream=s) for s in streams))


async def test_poison_messages_are_parked_and_their_streams_wait_then_retry_and_skip_release_them(
    backend: Backend,
) -> None:
    app = backend.app()
    delivered: dict[str, list[int]] = defaultdict(list)
    calls: dict[tuple[str, int], int] = defaultdict(int)
    broken = {"on": True}
    alerts = []

    @app.subscriber(
        "billing",
        policy=RetryPolicy(max_attempts=MAX_ATTEMPTS, immediate=1, backoff=0.02, jitter=0.0),
    )
    async def bill(event: Ordered, ctx: Context) -> None:
        calls[(event.order, event.n)] += 1
        if broken["on"] and event.order in POISONED and event.n == POISON_N:
            charge_card(event.order, event.n)
        delivered[event.order].append(event.n)

    app.on_alert(alerts.append)
    await app.open()
    await publish_interleaved(app, STREAMS, PER_STREAM)
    worker = app.worker(seed=7)

    async def both_dead() -> bool:
        return len(await app.dead_letters.list()) == len(POISONED)

    await drain_until(worker, both_dead)

    # Every other stream is delivered completely, in order.
    for stream in STREAMS:
        if stream not in POISONED:
            assert delivered[stream] == list(range(1, PER_STREAM + 1)), stream
    # A poisoned stream stops at its poison message: nothing after it is handled...
    dead = {h.stream: h for h in await app.dead_letters.list()}
    assert set(dead) == set(POISONED)
    for stream in POISONED:
        assert delivered[stream] == [1]
        held = dead[stream]
        # ...which was tried exactly max_attempts times, then parked with its cause.
        assert calls[(stream, POISON_N)] == MAX_ATTEMPTS
        assert held.attempts == MAX_ATTEMPTS
        assert held.status == "dead"
        assert held.subscription == "billing"
        assert held.error == f"RuntimeError: card declined for {stream} #{POISON_N}"
        assert held.traceback is not None and "charge_card" in held.traceback
        assert len(held.history) == MAX_ATTEMPTS
        # The later messages of its stream are held as waiting, not handled.
        rows = await app.dead_letters.list(subscription="billing", stream=stream, status=None)
        assert [(r.status, r.global_position > held.global_position) for r in rows] == [
            ("dead", False),
            *[("waiting", True)] * (PER_STREAM - POISON_N),
        ]
        for n in range(POISON_N + 1, PER_STREAM + 1):
            assert calls[(stream, n)] == 0
    assert sorted((a.kind, a.stream, a.attempts) for a in alerts) == [
        ("message-parked", s, MAX_ATTEMPTS) for s in POISONED
    ]
    retried_stream, skipped_stream = POISONED
    retried, skipped = dead[retried_stream], dead[skipped_stream]

    shown = await app.dead_letters.show(retried.id)
    assert shown.waiting == PER_STREAM - POISON_N
    assert shown.envelope is not None and shown.envelope.id == retried.message_id
    # A waiting message is not retried on its own: its head must go first.
    waiting = await app.dead_letters.list(stream=retried_stream, status="waiting")
    with pytest.raises(TidingsError, match=f"waits behind #{retried.id}"):
        await app.dead_letters.retry(waiting[0].id)

    if backend.kind == "sqlite":
        listed = tidings("dlq", "list", "--store", backend.url, "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert sorted((r["id"], r["stream"], r["status"], r["attempts"]) for r in rows) == sorted(
            (h.id, h.stream, "dead", MAX_ATTEMPTS) for h in dead.values()
        )
        assert {r["error"] for r in rows} == {h.error for h in dead.values()}
        assert {r["message_id"] for r in rows} == {h.message_id for h in dead.values()}
        detail = tidings("dlq", "show", str(retried.id), "--store", backend.url, "--json")
        assert detail.returncode == 0, detail.stderr
        row = json.loads(detail.stdout)
        assert row["id"] == retried.id
        assert row["waiting_behind"] == PER_STREAM - POISON_N
        assert row["data"] == {"order": retried_stream, "n": POISON_N}
        assert len(row["history"]) == MAX_ATTEMPTS
        assert row["history"][-1]["error"] == retried.error
        assert "charge_card" in row["traceback"]

    # The handler is fixed and deployed; the operator retries one stream and skips the other.
    broken["on"] = False
    if backend.kind == "sqlite":
        done = tidings("dlq", "retry", str(retried.id), "--store", backend.url, "--actor", "alice")
        assert done.returncode == 0, done.stdout + done.stderr
        done = tidings("dlq", "skip", str(skipped.id), "--store", backend.url)
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        await app.dead_letters.retry(retried.id, actor="alice")
        await app.dead_letters.skip(skipped.id)

    async def nothing_held() -> bool:
        return not await app.dead_letters.list(status=None)

    await drain_until(worker, nothing_held)
    assert delivered[retried_stream] == list(range(1, PER_STREAM + 1))
    assert calls[(retried_stream, POISON_N)] == MAX_ATTEMPTS + 1
    assert delivered[skipped_stream] == [n for n in range(1, PER_STREAM + 1) if n != POISON_N]
    assert calls[(skipped_stream, POISON_N)] == MAX_ATTEMPTS  # skipped: not handled again
    for stream in STREAMS:
        if stream not in POISONED:
            assert delivered[stream] == list(range(1, PER_STREAM + 1)), stream

    entries = await app.store.audit_entries()
    assert [(e.actor, e.action) for e in entries] == [
        (audit_actor_default(), "dlq.skip"),
        ("alice", "dlq.retry"),
    ]
    skip_entry, retry_entry = entries
    assert retry_entry.target == f"billing#{retried.global_position}"
    assert retried.message_id in retry_entry.detail and retried_stream in retry_entry.detail
    assert skip_entry.target == f"billing#{skipped.global_position}"
    assert skipped.message_id in skip_entry.detail and skipped_stream in skip_entry.detail
    assert retry_entry.at > 0 and skip_entry.at >= retry_entry.at

    # Draining again changes nothing: everything was delivered exactly once.
    before = dict(calls)
    await worker.drain()
    assert dict(calls) == before


async def test_unsequenced_subscriber_parks_and_moves_on_past_the_failing_message(
    backend: Backend,
) -> None:
    app = backend.app()
    delivered: list[int] = []
    broken = {"on": True}

    @app.subscriber(
        "mailer", policy=RetryPolicy(max_attempts=2, immediate=1, backoff=0.01, sequenced=False)
    )
    def mail(event: Ordered, ctx: Context) -> None:
        if broken["on"] and event.n == 2:
            raise ConnectionError("smtp down")
        delivered.append(event.n)

    await app.open()
    for n in range(1, 6):
        await app.publish(Ordered(order="o-1", n=n), stream="o-1")
    worker = app.worker()
    await worker.drain()
    assert delivered == [1, 3, 4, 5]
    (held,) = await app.dead_letters.list(status=None)
    assert (held.status, held.attempts, held.error) == ("dead", 2, "ConnectionError: smtp down")

    broken["on"] = False
    await app.dead_letters.retry(held.id)

    async def nothing_held() -> bool:
        return not await app.dead_letters.list(status=None)

    await drain_until(worker, nothing_held)
    assert delivered == [1, 3, 4, 5, 2]


async def test_unsequenced_subscriber_retries_a_later_failure_of_a_stream_with_a_dead_letter(
    backend: Backend,
) -> None:
    """With sequenced=False every message stands on its own: message 4 failing once (a timeout)
    must be retried after its backoff and delivered, even though message 2 of the same stream is
    poison and ends dead."""
    app = backend.app()
    delivered: list[int] = []
    tries: dict[int, int] = defaultdict(int)

    @app.subscriber(
        "mailer",
        policy=RetryPolicy(max_attempts=3, immediate=0, backoff=0.01, jitter=0.0, sequenced=False),
    )
    def mail(event: Ordered, ctx: Context) -> None:
        tries[event.n] += 1
        if event.n == 2:
            raise ConnectionError("mailbox does not exist")
        if event.n == 4 and tries[4] == 1:
            raise TimeoutError("smtp timed out")
        delivered.append(event.n)

    await app.open()
    for n in range(1, 7):
        await app.publish(Ordered(order="o-1", n=n), stream="o-1")

    async def settled() -> bool:
        return 4 in delivered and len(await app.dead_letters.list()) == 1

    async def state() -> str:
        return f"delivered={delivered}, tries={dict(tries)}, held={await held_rows(app)}"

    await drain_until(app.worker(), settled, timeout=3, state=state)
    assert sorted(delivered) == [1, 3, 4, 5, 6]
    assert tries[4] == 2
    assert await held_rows(app) == [
        (2, "o-1", "dead", 3, "ConnectionError: mailbox does not exist")
    ]


async def test_unsequenced_subscriber_retries_any_dead_letter_of_a_stream_on_its_own(
    backend: Backend,
) -> None:
    """With sequenced=False two messages of one stream can be dead; the operator retries the
    second one (the first is still being investigated), and it is delivered."""
    app = backend.app()
    delivered: list[int] = []
    broken = {2, 4}

    @app.subscriber("mailer", policy=RetryPolicy(max_attempts=1, sequenced=False))
    def mail(event: Ordered, ctx: Context) -> None:
        if event.n in broken:
            raise ConnectionError(f"cannot mail #{event.n}")
        delivered.append(event.n)

    await app.open()
    for n in range(1, 7):
        await app.publish(Ordered(order="o-1", n=n), stream="o-1")
    worker = app.worker()
    await worker.drain()
    assert delivered == [1, 3, 5, 6]
    first, second = await app.dead_letters.list()
    assert (first.global_position, second.global_position) == (2, 4)

    broken.discard(4)
    await app.dead_letters.retry(second.id, actor="ops")

    async def delivered_4() -> bool:
        return 4 in delivered

    async def state() -> str:
        return f"delivered={delivered}, held={await held_rows(app)}"

    await drain_until(worker, delivered_4, timeout=3, state=state)
    assert delivered == [1, 3, 5, 6, 4]
    assert [(h.global_position, h.status) for h in await app.dead_letters.list(status=None)] == [
        (2, "dead")
    ]


async def test_dead_letters_grouped_by_error_and_retried_by_error_or_by_stream(
    backend: Backend,
) -> None:
    app = backend.app()
    delivered: dict[str, list[int]] = defaultdict(list)
    failing = {"a-1": "KeyError: 'sku'", "a-2": "KeyError: 'sku'", "a-3": "OSError: disk full"}

    @app.subscriber("export", policy=RetryPolicy(max_attempts=1))
    def export(event: Ordered, ctx: Context) -> None:
        if event.n == 1 and event.order in failing:
            if failing[event.order].startswith("KeyError"):
                raise KeyError("sku")
            raise OSError("disk full")
        delivered[event.order].append(event.n)

    await app.open()
    await publish_interleaved(app, ["a-1", "a-2", "a-3", "a-4"], 3)
    worker = app.worker()
    await worker.drain()
    assert delivered == {"a-4": [1, 2, 3]}
    groups = await app.dead_letters.groups()
    assert [(g.subscription, g.error, g.count) for g in groups] == [
        ("export", "KeyError: 'sku'", 2),
        ("export", "OSError: disk full", 1),
    ]
    by_stream = {h.stream: h.id for h in await app.dead_letters.list()}
    assert sorted(groups[0].ids) == sorted([by_stream["a-1"], by_stream["a-2"]])

    failing = {}
    assert await app.dead_letters.retry_error("KeyError", actor="ops") == 2
    await worker.drain()
    assert delivered["a-1"] == [1, 2, 3] and delivered["a-2"] == [1, 2, 3]
    assert "a-3" not in delivered
    assert await app.dead_letters.retry_stream("export", "a-3", actor="ops") == 1
    assert await app.dead_letters.retry_stream("export", "a-4", actor="ops") == 0
    await worker.drain()
    assert delivered["a-3"] == [1, 2, 3]
    assert await app.dead_letters.list(status=None) == []
    actions = [(e.actor, e.action) for e in await app.store.audit_entries()]
    assert actions == [("ops", "dlq.retry-stream"), *[("ops", "dlq.retry-error")] * 2]


async def test_a_failing_alert_callback_does_not_stop_delivery(backend: Backend) -> None:
    app = backend.app()
    delivered: list[int] = []

    @app.subscriber("s", policy=RetryPolicy(max_attempts=1))
    def handle(event: Ordered, ctx: Context) -> None:
        if event.order == "bad":
            raise ValueError("bad order")
        delivered.append(event.n)

    @app.on_alert
    async def page_someone(alert: object) -> None:
        raise RuntimeError("pager is down")

    await app.open()
    await app.publish(Ordered(order="bad", n=0), stream="bad")
    for n in range(1, 4):
        await app.publish(Ordered(order="good", n=n), stream="good")
    await app.worker().drain()
    assert delivered == [1, 2, 3]
    assert [h.stream for h in await app.dead_letters.list()] == ["bad"]


async def test_a_subscriber_that_refuses_an_event_is_a_failure_and_is_parked(
    backend: Backend,
) -> None:
    app = backend.app()
    seen: list[str] = []

    @app.subscriber("stock", policy=RetryPolicy(max_attempts=2, immediate=1, backoff=0.01))
    def reserve_stock(event: Noted, ctx: Context) -> None:
        seen.append(event.note)
        if event.note == "refuse me":
            raise Refused("out of stock", code="no-stock")

    await app.open()
    for note in ("fine", "refuse me", "after"):
        await app.publish(Noted(note=note), stream="stock-1")
    await app.publish(Noted(note="elsewhere"), stream="stock-2")
    worker = app.worker()

    async def parked() -> bool:
        return len(await app.dead_letters.list()) == 1

    await drain_until(worker, parked)
    (held,) = await app.dead_letters.list()
    assert held.stream == "stock-1"
    assert held.error is not None
    assert held.error.startswith("ConfigurationError: subscriber 'stock' raised Refused(")
    assert "out of stock" in held.error and "cannot be refused" in held.error
    assert held.traceback is not None and "reserve_stock" in held.traceback
    # It is a failure like any other (retried by the policy, never more than max_attempts), and
    # the stream waits behind it.
    assert 1 <= held.attempts <= 2 and seen.count("refuse me") == held.attempts
    assert "after" not in seen and "elsewhere" in seen


# --- undecodable messages ---------------------------------------------------------------------


async def inject_message(
    backend: Backend, app: App, stream: str, type_name: str, data: bytes
) -> None:
    """Put a message into the log that the code cannot decode, as an old deployment or a hand-edit
    would have left it (SQLite: written with sqlite3, bypassing tidings entirely)."""
    if backend.kind == "sqlite":
        conn = sqlite3.connect(backend.path)
        try:
            with conn:
                (top,) = conn.execute(
                    "SELECT COALESCE(MAX(stream_position), 0) FROM tidings_log WHERE stream = ?",
                    (stream,),
                ).fetchone()
                conn.execute(
                    "INSERT INTO tidings_log (stream, stream_position, id, kind, type, version, "
                    "data, correlation_id, causation_id, headers, recorded_at) "
                    "VALUES (?, ?, ?, 'event', ?, 1, ?, NULL, NULL, NULL, ?)",
                    (stream, top + 1, uuid7(), type_name, data, time.time()),
                )
        finally:
            conn.close()
    else:
        message = NewMessage(uuid7(), "event", type_name, 1, data)
        await app.store.commit(Transaction([AppendOp(stream, [message])]))


async def test_an_undecodable_message_is_parked_with_its_cause_and_the_rest_is_delivered(
    backend: Backend,
) -> None:
    app = backend.app()
    delivered: dict[str, list[int]] = defaultdict(list)

    @app.subscriber("ledger", policy=RetryPolicy(max_attempts=3, immediate=2, backoff=0.01))
    def record(event: Ordered, ctx: Context) -> None:
        delivered[event.order].append(event.n)

    await app.open()
    for stream in ("good-1", "bad", "good-2"):
        await app.publish(Ordered(order=stream, n=1), stream=stream)
    # Position 2 of "bad": a known type whose payload is not valid JSON; then a type nobody
    # defines, which no subscription takes and which must not get in anyone's way.
    await inject_message(backend, app, "bad", "dlv.Ordered", b'{"order": "bad", "n": ')
    await inject_message(backend, app, "good-1", "dlv.NoSuchType", b"{}")
    for stream in ("good-1", "bad", "good-2"):
        await app.publish(Ordered(order=stream, n=3), stream=stream)

    await app.worker().drain()
    assert delivered == {"good-1": [1, 3], "good-2": [1, 3], "bad": [1]}
    (held,) = await app.dead_letters.list()
    assert held.stream == "bad" and held.type == "dlv.Ordered"
    assert held.error is not None
    assert held.error.startswith(
        "MessageDecodeError: cannot decode message (type 'dlv.Ordered', stream 'bad', position 2)"
    ), held.error
    assert held.attempts == 1  # it will not decode on a retry either: parked at once
    waiting = await app.dead_letters.list(stream="bad", status="waiting")
    assert len(waiting) == 1

    # The payload cannot be repaired: the operator skips it and the stream flows again.
    await app.dead_letters.skip(held.id, actor="ops")
    await app.worker().drain()
    assert delivered["bad"] == [1, 3]
    assert not await app.dead_letters.list(status=None)


class PricedV1(Event, type_name="dlv.Priced"):
    sku: str


class PricedV2(Event, type_name="dlv.Priced", version=2):
    sku: str
    cents: int


async def test_a_message_from_a_newer_deployment_is_parked_until_the_code_is_deployed(
    backend: Backend,
) -> None:
    """The producer runs version 2 of a message class; the consumer still runs version 1. The
    message is parked ("deploy the newer code"), the stream waits, and after the consumer is
    upgraded, a retry delivers it and what waited behind it."""
    producer = backend.app("producer")
    await producer.publish(PricedV2(sku="tea", cents=250), stream="price-tea")
    await producer.publish(PricedV2(sku="tea", cents=275), stream="price-tea")
    await producer.publish(PricedV2(sku="jam", cents=400), stream="price-jam")

    old = backend.app("consumer")
    seen_old: list[str] = []

    @old.subscriber("prices", policy=RetryPolicy(max_attempts=5, backoff=0.01))
    def old_prices(event: PricedV1, ctx: Context) -> None:
        seen_old.append(event.sku)

    await old.worker().drain()
    assert seen_old == []
    dead = await old.dead_letters.list()
    assert [(h.stream, h.attempts) for h in dead] == [("price-tea", 1), ("price-jam", 1)]
    assert dead[0].error is not None and "newer than the code's version 1" in dead[0].error
    assert [h.status for h in await old.dead_letters.list(stream="price-tea", status=None)] == [
        "dead",
        "waiting",
    ]
    await old.close()

    new = backend.app("consumer")
    seen: list[tuple[str, int]] = []

    @new.subscriber("prices", policy=RetryPolicy(max_attempts=5, backoff=0.01))
    def prices(event: PricedV2, ctx: Context) -> None:
        seen.append((event.sku, event.cents))

    assert await new.dead_letters.retry_error("MessageDecodeError", actor="deployer") == 2
    await new.worker().drain()
    assert sorted(seen) == [("jam", 400), ("tea", 250), ("tea", 275)]
    assert [c for s, c in seen if s == "tea"] == [250, 275]
    assert await new.dead_letters.list(status=None) == []


# --- catch-up and start="now" -----------------------------------------------------------------


async def test_a_new_subscription_catches_up_from_the_beginning_and_start_now_sees_only_new(
    backend: Backend,
) -> None:
    first = backend.app()
    early_count = 0

    @first.subscriber("early")
    def early(event: Ordered, ctx: Context) -> None:
        nonlocal early_count
        early_count += 1

    await first.open()
    streams = [f"acct-{i:02d}" for i in range(100)]
    for stream in streams:
        await first.append(stream, [Ordered(order=stream, n=n) for n in range(1, 101)])
    await first.worker().drain()
    assert early_count == 10_000
    await first.close()

    # A new deployment: a new App object on the same store, with two more subscribers.
    second = backend.app()
    early_again = 0
    late: dict[str, list[int]] = defaultdict(list)
    fresh: list[tuple[str, int]] = []

    @second.subscriber("early")
    def early2(event: Ordered, ctx: Context) -> None:
        nonlocal early_again
        early_again += 1

    @second.subscriber("late")
    def late_reader(event: Ordered, ctx: Context) -> None:
        late[event.order].append(event.n)

    @second.subscriber("fresh", start="now")
    def fresh_reader(event: Ordered, ctx: Context) -> None:
        fresh.append((event.order, event.n))

    worker = second.worker()
    await worker.drain()
    assert early_again == 0  # its checkpoint survived the restart
    assert sum(map(len, late.values())) == 10_000
    assert all(late[s] == list(range(1, 101)) for s in streams)
    assert fresh == []

    for n in (101, 102, 103):
        await second.publish(Ordered(order="acct-00", n=n), stream="acct-00")
    await worker.drain()
    assert fresh == [("acct-00", 101), ("acct-00", 102), ("acct-00", 103)]
    assert late["acct-00"][-3:] == [101, 102, 103] and len(late["acct-00"]) == 103
    assert early_again == 3


# --- exactly-once effects through ctx -----------------------------------------------------------


async def test_documents_written_through_ctx_count_each_event_exactly_once(
    backend: Backend,
) -> None:
    app = backend.app()
    runs = 0

    @app.subscriber("tally", policy=RetryPolicy(max_attempts=2, immediate=1, backoff=0.01))
    async def tally(event: Ordered, ctx: Context) -> None:
        nonlocal runs
        runs += 1
        count = await ctx.get("tally", event.order) or 0
        ctx.put("tally", event.order, count + 1)
        if event.order == "t-05" and event.n == 3:
            # This handler's writes cannot be committed (the stream is not at version 999), which
            # fails the whole batch it is part of: the batch is redone message by message.
            ctx.append("side", [Noted(note="x")], expected_version=999)

    await app.open()
    streams = [f"t-{i:02d}" for i in range(20)]
    await publish_interleaved(app, streams, 10)
    worker = app.worker()
    await worker.drain()
    # The failed batch was redone message by message (its handlers ran again), yet nothing
    # was counted twice.
    assert runs > 200
    counts = await app.documents("tally")
    expected = {s: 10 for s in streams} | {"t-05": 2}  # t-05 waits behind its parked 3rd event
    assert counts == expected
    (held,) = await app.dead_letters.list()
    assert held.stream == "t-05" and held.error is not None
    assert held.error.startswith("WrongExpectedVersion")

    # Draining again, or restarting, changes nothing.
    runs_before = runs
    await worker.drain()
    assert await app.documents("tally") == expected
    again = backend.app()
    again.subscriber("tally")(tally)
    await again.worker().drain()
    assert await again.documents("tally") == expected
    assert runs == runs_before


# --- a worker that cannot deliver everything does not start -------------------------------------


async def test_a_worker_refuses_to_start_when_a_sent_command_has_no_handler(
    backend: Backend,
) -> None:
    app = backend.app()

    @app.subscriber("notes")
    def notes(event: Noted, ctx: Context) -> None:
        pass

    await app.send(Orphan(what="nobody handles me"))
    problems = app.validate()
    assert [p.code for p in problems] == ["command-without-handler"]
    assert "dlv.Orphan" in problems[0].message
    with pytest.raises(ConfigurationError, match=r"dlv\.Orphan has no handler"):
        await app.worker().drain()
    with pytest.raises(ConfigurationError, match=r"dlv\.Orphan has no handler"):
        await asyncio.wait_for(app.worker().run(), timeout=10)


# --- an operator repairs a running system ----------------------------------------------------


async def test_a_running_worker_replays_what_an_operator_retries_from_another_process(
    tmp_path: Path,
) -> None:
    """The worker keeps running; the operator runs `tidings dlq retry` in another process; the
    parked message and those waiting behind it are delivered in order without a restart."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    app = App("live", store=url)
    delivered: dict[str, list[int]] = defaultdict(list)
    broken = {"on": True}

    @app.subscriber("fulfil", policy=RetryPolicy(max_attempts=2, immediate=0, backoff=0.01))
    def fulfil(event: Ordered, ctx: Context) -> None:
        if broken["on"] and event.order == "o-2" and event.n == 2:
            raise LookupError("warehouse unknown")
        delivered[event.order].append(event.n)

    worker = app.worker(idle_poll=0.05)
    running = asyncio.create_task(worker.run())
    try:
        await publish_interleaved(app, ["o-1", "o-2", "o-3"], 4)

        async def parked() -> bool:
            return len(await app.dead_letters.list()) == 1 and len(delivered["o-3"]) == 4

        await wait_until(parked, state=lambda: held_rows(app))
        assert delivered["o-2"] == [1]
        (held,) = await app.dead_letters.list()
        broken["on"] = False
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings",
            "dlq",
            "retry",
            str(held.id),
            "--store",
            url,
            "--actor",
            "carol",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, (out, err)
        assert b"queued for retry" in out

        async def repaired() -> bool:
            return delivered["o-2"] == [1, 2, 3, 4]

        async def state() -> str:
            return f"delivered={dict(delivered)}, held={await held_rows(app)}"

        await wait_until(repaired, state=state)
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)
        await app.close()
    assert delivered == {"o-1": [1, 2, 3, 4], "o-2": [1, 2, 3, 4], "o-3": [1, 2, 3, 4]}
    async with App("audit", store=url) as again:
        (entry,) = await again.store.audit_entries()
    assert (entry.actor, entry.action) == ("carol", "dlq.retry")
    audit = tidings("audit", "--store", url, "--json")
    assert audit.returncode == 0, audit.stderr
    assert [(e["actor"], e["action"], e["target"]) for e in json.loads(audit.stdout)] == [
        ("carol", "dlq.retry", f"fulfil#{held.global_position}")
    ]
