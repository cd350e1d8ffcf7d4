"""Read models written through ``ctx``: version checks, ``ctx.update``, and waiting for a view."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings import App, Context, DocumentConflict, Event, NotCaughtUp
from tidings.context import Overlay
from tidings.delivery.handling import pend
from tidings.records import Transaction


class Added(Event):
    key: str
    amount: int


def context(app: App, overlay: Overlay | None = None) -> Context:
    return Context(app.factory, app.reader, "m", "m", overlay=overlay)


async def add(ctx: Context, event: Added) -> None:
    await ctx.update("totals", event.key, lambda total: (total or 0) + event.amount)


#: (partition, key, amount) events; and the schedule: which partition acts next, and whether it
#: handles its next event into its open batch (True) or commits the batch (False).
EVENTS = st.lists(st.tuples(st.integers(0, 2), st.sampled_from("abc"), st.integers(1, 9)))
SCHEDULE = st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS, schedule=SCHEDULE)
def test_interleaved_partitions_fold_like_one_reader(
    events: list[tuple[int, str, int]], schedule: list[tuple[int, bool]]
) -> None:
    """Partitions handle their events in batches (later handlers read earlier ones' writes
    through the overlay) and commit in any interleaving; a batch refused for a conflict is
    handled again on fresh reads. The view equals the sequential fold of every event."""

    async def main() -> None:
        app = App("fold", store="memory://", messages=[Added])
        async with app:
            queues = defaultdict(list)
            for partition, key, amount in events:
                queues[partition].append(Added(key, amount))
            # partition -> (its open batch, overlay, how many of its events the batch holds)
            open_: dict[int, tuple[Transaction, Overlay, int]] = {}
            steps = iter(schedule)
            while any(queues.values()):
                partition, handle = next(steps, (min(p for p in queues if queues[p]), False))
                queue = queues[partition]
                if not queue:
                    continue
                tx, overlay, count = open_.get(partition, (Transaction(), {}, 0))
                if count < len(queue) and (handle or count == 0):
                    ctx = context(app, overlay)
                    await add(ctx, queue[count])
                    assert ctx.writes is not None
                    tx.extend(ctx.writes)
                    pend(overlay, ctx.writes.documents)
                    open_[partition] = (tx, overlay, count + 1)
                    continue
                del open_[partition]
                try:
                    await app.committer.commit(tx)
                except DocumentConflict:
                    continue
                del queue[:count]
            expected: dict[str, int] = defaultdict(int)
            for _, key, amount in events:
                expected[key] += amount
            assert await app.documents("totals") == dict(expected)

    asyncio.run(main())


async def test_a_stale_read_conflicts_and_writes_nothing() -> None:
    app = App("stale", store="memory://", messages=[Added])
    async with app:
        first, second = context(app), context(app)
        await add(first, Added("a", 1))
        await add(second, Added("a", 2))
        assert first.writes is not None and second.writes is not None
        await app.committer.commit(first.writes)
        with pytest.raises(DocumentConflict, match="'a' of collection 'totals'"):
            await app.committer.commit(second.writes)
        assert await app.get("totals", "a") == 1


async def test_update_deletes_when_fn_returns_none_and_reads_its_own_writes() -> None:
    app = App("update", store="memory://", messages=[Added])
    async with app:
        ctx = context(app)
        assert await ctx.update("totals", "a", lambda t: (t or 0) + 5) == 5
        assert await ctx.update("totals", "a", lambda t: t * 2) == 10
        assert ctx.writes is not None
        await app.committer.commit(ctx.writes)
        assert await app.get("totals", "a") == 10
        ctx = context(app)
        assert await ctx.update("totals", "a", lambda t: None) is None
        assert ctx.writes is not None
        await app.committer.commit(ctx.writes)
        assert await app.documents("totals") == {}


async def test_a_handler_that_only_reads_commits_nothing() -> None:
    app = App("reader", store="memory://", messages=[Added])
    async with app:
        ctx = context(app)
        assert await ctx.get("totals", "a") is None
        assert ctx.writes is None


async def test_a_worker_view_catches_up_with_what_the_app_published() -> None:
    app = App("wait", store="memory://", messages=[Added])

    @app.subscriber("totals-view", partitions=4)
    async def total(event: Added, ctx: Context) -> None:
        await add(ctx, event)

    async with app:
        worker = app.worker()
        running = asyncio.create_task(worker.run(handle_signals=False))
        try:
            for n in range(20):
                await app.publish(Added(f"k{n % 3}", 1), stream=f"s{n % 7}")
            await app.caught_up("totals-view", timeout=10)
            totals = await app.documents("totals")
            assert sum(totals.values()) == 20
            assert app.last_position == await app.position() == 20
        finally:
            worker.stop()
            await running


async def test_caught_up_times_out_naming_how_far_the_view_got() -> None:
    app = App("late", store="memory://", messages=[Added])

    @app.subscriber("totals-view", partitions=2)
    async def total(event: Added, ctx: Context) -> None:
        await add(ctx, event)

    async with app:
        await app.publish(Added("a", 1))
        with pytest.raises(NotCaughtUp, match=r"'totals-view'.*no worker has started it"):
            await app.caught_up("totals-view", timeout=0.05)
        await app.worker().drain()
        await app.publish(Added("a", 1))
        with pytest.raises(TimeoutError, match=r"1 message\(s\) up to it not handled yet"):
            await app.caught_up("totals-view", timeout=0.05)
        await app.worker().drain()
        await app.caught_up("totals-view", timeout=1)
        with pytest.raises(Exception, match="no subscription named 'nope'"):
            await app.caught_up("nope", 1, timeout=1)
