"""The gap race on PostgreSQL: a catch-up reader never skips a committed event.

16 writers (4 processes x 4 asyncio tasks, each with a store and connection of its own) append
EVENTS events. Half of them hold each transaction open for a random time after its rows are
written, 5% rolling back there (a deferred trigger does it, on their sessions only); the other half
commit in the store's one-statement append. Meanwhile
a reader in this process follows the log with
``read_all(after=checkpoint)`` and moves its checkpoint past what it read, as a worker does. On a
log whose positions come from a sequence the reader would see a later position while an earlier one
is still uncommitted, move past it and never see it. Here the reader must see every committed event
exactly once, in global order, with no position missing, and none of the rolled-back ones.

The issue asked for 200,000 events; ``TIDINGS_GAP_EVENTS=200000`` runs that (by hand).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

EVENTS = int(os.environ.get("TIDINGS_GAP_EVENTS", "20000"))
PROCESSES = 4
TASKS = 4
WRITER = Path(__file__).with_name("_gap_writer.py")
START_TIMEOUT = 60.0
#: Seconds without a new event after which the reader counts as stuck.
STUCK = 120.0

#: On the sessions of the writers that hold (``tidings_test.hold=on``), once per transaction, just
#: before it commits (the append lock held): wait up to 1 ms, and roll back 5% of the time.
HOLD = """
CREATE FUNCTION {schema}.hold_then_maybe_roll_back() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tidings_test.hold', true) = 'on'
       AND current_setting('tidings_test.held', true) IS DISTINCT FROM 'yes' THEN
        PERFORM set_config('tidings_test.held', 'yes', true);
        PERFORM pg_sleep(random() * 0.001);
        IF random() < 0.05 THEN
            RAISE EXCEPTION 'rolled back by the test';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER hold_then_maybe_roll_back AFTER INSERT ON {schema}.log
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.hold_then_maybe_roll_back();
"""


async def start_writers(
    url: str, schema: str, tmp_path: Path
) -> tuple[list[asyncio.subprocess.Process], list[Path]]:
    """Start the writer processes, wait until each is connected, then let them all go at once."""
    per_task = EVENTS // (PROCESSES * TASKS)
    assert per_task * PROCESSES * TASKS == EVENTS
    reports = [tmp_path / f"writer-{n}.json" for n in range(PROCESSES)]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WRITER),
            url,
            schema,
            f"w{n}",
            str(TASKS),
            str(per_task),
            str(n),
            str(report),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n, report in enumerate(reports)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if line != b"ready\n":
            raise AssertionError(f"a writer did not start: {line!r}\n{await proc.stderr.read()!r}")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    return procs, reports


@pytest.mark.timeout(300 + EVENTS // 50)  # 20,000 events: 700 s; 200,000 (by hand): 4,300 s
async def test_a_catch_up_reader_sees_every_committed_event_once_in_order_under_16_writers(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    import psycopg

    from tidings.backends.postgres import PostgresStore

    reader = PostgresStore(postgres_url, schema=pg_schema)
    await reader.open()  # creates the schema before the writers start
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(HOLD.format(schema=pg_schema).encode())
    try:
        started = time.monotonic()
        procs, reports = await start_writers(postgres_url, pg_schema, tmp_path)
        finished = asyncio.gather(*(proc.communicate() for proc in procs))

        seen: list[tuple[str, int]] = []
        checkpoint = 0
        reads_while_writing = 0
        # Stuck means no new event for a while, however long the whole run takes (200,000
        # events on a slow VM take longer than ten minutes).
        progressed = time.monotonic()
        while True:
            batch = await reader.read_all(after=checkpoint, limit=1000)
            if batch:
                progressed = time.monotonic()
            for env in batch:
                # Positions have no gaps, so a reader that skipped one would see it here at once.
                assert env.global_position == checkpoint + 1, (
                    f"read position {env.global_position} right after {checkpoint}: "
                    f"{env.global_position - checkpoint - 1} committed position(s) skipped"
                )
                seen.append((env.id, env.global_position))
                checkpoint = env.global_position
            if batch and not finished.done():
                reads_while_writing += 1
            if not batch:
                if finished.done() and checkpoint == await reader.last_position():
                    break
                assert time.monotonic() - progressed < STUCK, f"reader stuck at {checkpoint}"
                await reader.wait_for_change(0.05)
        outputs = await finished
        elapsed = time.monotonic() - started
    finally:
        await reader.close()

    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    committed: list[tuple[str, int]] = []
    rolled_back: set[str] = set()
    for report in reports:
        found = json.loads(report.read_text())
        committed.extend((i, p) for i, p in found["committed"])
        rolled_back.update(found["rolled_back"])

    assert len(committed) == EVENTS
    assert rolled_back, "no transaction rolled back: the test did not exercise rollbacks"
    # Every committed event exactly once, where its writer was told it went; no rolled-back one.
    assert sorted(seen, key=lambda s: s[1]) == seen
    assert len({i for i, _ in seen}) == len(seen) == EVENTS
    assert dict(seen) == dict(committed)
    assert not rolled_back & {i for i, _ in seen}
    # The reader followed the writers rather than reading everything at the end.
    assert reads_while_writing > 10, reads_while_writing
    print(
        f"\n{EVENTS} events, {len(rolled_back)} rolled back, {reads_while_writing} reads while "
        f"writing, {elapsed:.1f}s"
    )
