"""A worker keeps its leases while it is busy, commits long batches in slices, and says when a lease
is lost, renewed late or taken over — on SQLite and PostgreSQL, one worker in this process.

* A handler that takes twice the lease: the lease is still this worker's, and unexpired, when the
  handler returns.
* A batch of 40 messages of 20 ms with a 0.6 s lease: the checkpoint moves while the batch is still
  being handled (a slice is a third of the lease), not only at its end.
* The lease is taken away while a handler runs (the worker's leases are released and another
  worker id claims the partition): the slice in flight is not committed and is handled again
  once the lease comes back; the projection stays exactly-once, and each event is logged.
* A synchronous handler blocks the event loop for most of a lease: the late renewal is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tidings import App, Context, Event
from tidings.delivery.worker import Worker
from tidings.errors import ConfigurationError


class Step(Event, type_name="lease.Step"):
    n: int


@pytest.fixture(params=["sqlite", "postgres"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lease.db'}"
    else:
        url = f"{request.getfixturevalue('postgres_url')}?schema={request.getfixturevalue('pg_schema')}"
    found = App("lease", store=url, messages=[Step])
    yield found
    await found.close()


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


async def caught_up(app: App, subscription: str, owner: str | None = None) -> bool:
    """Whether the subscription's one partition is at the end of the log (and held by ``owner``)."""
    parts = await app.store.partitions(subscription)
    last = await app.store.last_position()
    return bool(parts) and parts[0].position == last and owner in (None, parts[0].owner)


async def run_until(worker: Worker, condition: Callable[[], Awaitable[bool]], what: str) -> None:
    running = asyncio.create_task(worker.run())
    try:
        await wait_for(condition, 20.0, what)
    finally:
        worker.stop()
        await running


async def test_a_handler_longer_than_the_lease_keeps_the_lease(app: App) -> None:
    ttl = 0.3
    seen: list[tuple[str | None, float]] = []

    @app.subscriber("slow", partitions=1)
    async def slow(event: Step, ctx: Context) -> None:
        await asyncio.sleep(2 * ttl)
        [part] = await app.store.partitions("slow")
        seen.append((part.owner, (part.lease_expires or 0.0) - await app.store.now()))

    await app.open()
    for n in range(3):
        await app.publish(Step(n=n), stream="s")
    worker = app.worker(lease_ttl=ttl, worker_id="busy")

    await run_until(worker, lambda: caught_up(app, "slow"), "the three events")
    assert len(seen) == 3, seen
    for owner, remaining in seen:
        assert owner == "busy", seen
        assert remaining > 0, f"the lease ran out while the handler ran: {seen}"


async def test_a_long_batch_commits_within_the_lease(app: App) -> None:
    ttl = 0.6
    checkpoints: list[int] = []

    @app.subscriber("steady", partitions=1)
    async def steady(event: Step, ctx: Context) -> None:
        await asyncio.sleep(0.02)
        [part] = await app.store.partitions("steady")
        checkpoints.append(part.position)

    await app.open()
    for n in range(40):
        await app.publish(Step(n=n), stream="s")
    worker = app.worker(lease_ttl=ttl, batch_size=500)

    await run_until(worker, lambda: caught_up(app, "steady"), "the forty events")
    assert len(checkpoints) == 40
    commits = len(set(checkpoints))
    # 40 x 20 ms = 0.8 s in slices of ttl / 3 = 0.2 s: the batch is committed in several parts.
    assert commits >= 3, f"the batch was committed in {commits} part(s): {checkpoints}"


async def test_a_lease_taken_mid_slice_redoes_only_that_slice_and_says_so(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidings.worker")
    handled: list[int] = []
    taken = asyncio.Event()

    @app.subscriber("counted", partitions=1)
    async def counted(event: Step, ctx: Context) -> None:
        handled.append(event.n)
        await asyncio.sleep(0.1)
        if event.n == 5 and not taken.is_set():
            # Another worker takes the partition while this handler runs.
            while True:
                await app.store.release("victim")
                # The victim's heartbeat may claim the free partition first: then again.
                if await app.store.claim("counted", "thief", 1, 0.5):
                    break
            taken.set()
        current = await ctx.get("counts", str(event.n)) or 0
        ctx.put("counts", str(event.n), current + 1)

    await app.open()
    for n in range(10):
        await app.publish(Step(n=n), stream="s")
    # Slices of 0.3 s: two or three messages each.
    worker = app.worker(lease_ttl=0.9, batch_size=500, worker_id="victim")
    await run_until(
        worker,
        lambda: caught_up(app, "counted", "victim"),
        "the victim to take the partition back and finish",
    )
    counts = await app.documents("counts")
    assert counts == {str(n): 1 for n in range(10)}, counts
    # Only the slice in flight when the lease was taken (the one with 5) is handled again: the
    # slices committed before it are kept, and the victim stops its slice once it knows.
    redo = handled.index(5) + 1
    first_again = handled[redo]
    assert 1 <= first_again <= 5, handled
    assert handled[:redo] == list(range(6)), handled
    assert handled[redo:] == list(range(first_again, 10)), handled
    text = [r.getMessage() for r in caplog.records]
    assert any("lease lost" in t for t in text), text
    assert any("took over partitions [0] from thief" in t for t in text), text


async def test_a_late_renewal_is_logged(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidings.worker")
    ttl = 0.6

    @app.subscriber("blocking", partitions=1)
    def blocking(event: Step, ctx: Context) -> None:
        time.sleep(0.5)  # the handler under test blocks the event loop, as a slow sync one does

    await app.open()
    await app.publish(Step(n=1), stream="s")
    worker = app.worker(lease_ttl=ttl, worker_id="blocked")

    await run_until(worker, lambda: caught_up(app, "blocking"), "the event")
    late = [r for r in caplog.records if "renewed its leases" in r.getMessage()]
    assert late and late[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(("option", "value"), [("lease_ttl", 0.0), ("batch_size", 0)])
def test_a_worker_refuses_a_lease_or_batch_it_cannot_work_with(option: str, value: float) -> None:
    app = App("lease", store="memory://")
    with pytest.raises(ConfigurationError, match=f"{option}={value!r}"):
        app.worker(**{option: value})
