"""SIGKILL during appends of 1,000 events: each append is all there or not there at all.

A child process (``_batch_appender.py``) appends batches of 1,000 events to a SQLite file, one
``app.append(stream, events)`` call per batch, round-robin over a few streams. The parent kills it
with SIGKILL at random moments (a fixed seed makes the moments reproducible), ten times over the
same file, then checks the file: every stream holds a multiple of 1,000 events, each run of 1,000 is
one whole batch in order, stream positions are gapless, global positions are contiguous, and every
append the child saw succeed is there.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tidings import App, Event

CHILD = Path(__file__).with_name("_batch_appender.py")
STREAMS = 4
BATCH = 1000
KILLS = 10
SEED = 20240607
READY_TIMEOUT = 30.0


class SigkillBatchItem(Event):
    """The child's event, as this process knows it: same type name, same fields."""

    batch: str
    index: int
    filler: str


@dataclass(frozen=True)
class Reported:
    """An append the child saw succeed."""

    stream: str
    version: int
    global_position: int
    batch: str


async def run_and_kill(db: Path, delay: float) -> list[Reported]:
    """Start a child, wait until it is appending, SIGKILL it after ``delay``; what it reported."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(db),
        str(STREAMS),
        str(BATCH),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if line != b"ready\n":
            err = await asyncio.wait_for(proc.stderr.read(), READY_TIMEOUT)
            raise AssertionError(f"child did not start: {line!r}\n{err.decode()}")
        await asyncio.sleep(delay)  # the moment of the kill, not a synchronisation
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        rest = await asyncio.wait_for(proc.stdout.read(), READY_TIMEOUT)
        err = await asyncio.wait_for(proc.stderr.read(), READY_TIMEOUT)
        await asyncio.wait_for(proc.wait(), READY_TIMEOUT)
    # It was killed while still running, not after failing or finishing by itself.
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode())
    assert not err.strip(), err.decode()
    reported = []
    for text in rest.decode().splitlines():
        word, stream, version, position, batch = text.split()
        assert word == "appended", text
        reported.append(Reported(stream, int(version), int(position), batch))
    return reported


async def test_sigkilled_batch_appends_are_all_or_nothing(tmp_path: Path) -> None:
    db = tmp_path / "batches.db"
    rng = random.Random(SEED)
    delays = [rng.uniform(0.0, 0.3) for _ in range(KILLS)]
    runs = [await run_and_kill(db, delay) for delay in delays]
    reported = [r for run in runs for r in run]

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute(
            "SELECT global_position, stream, stream_position, type, data FROM tidings_log "
            "ORDER BY global_position"
        ).fetchall()
    finally:
        conn.close()

    # Global positions are 1..N without a gap.
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    assert len(rows) % BATCH == 0, f"{len(rows)} rows: a batch was cut short"

    by_stream: dict[str, list[tuple[int, int, dict[str, object]]]] = defaultdict(list)
    for global_position, stream, stream_position, type_name, data in rows:
        assert type_name == "SigkillBatchItem"
        by_stream[stream].append((global_position, stream_position, json.loads(data)))

    batches: dict[str, tuple[str, int, int]] = {}  # batch -> (stream, last version, last global)
    for stream, items in by_stream.items():
        assert stream in {f"batch-{i}" for i in range(STREAMS)}
        positions = [p for _, p, _ in items]
        assert positions == list(range(1, len(items) + 1)), f"{stream}: positions have gaps"
        assert len(items) % BATCH == 0, f"{stream} holds {len(items)} events"
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            names = {item["batch"] for _, _, item in chunk}
            assert len(names) == 1, f"{stream} {start + 1}..{start + BATCH} mixes batches {names}"
            assert [item["index"] for _, _, item in chunk] == list(range(BATCH))
            globals_ = [g for g, _, _ in chunk]
            assert globals_ == list(range(globals_[0], globals_[0] + BATCH))
            (name,) = names
            assert name not in batches, f"batch {name} was stored twice"
            batches[name] = (stream, chunk[-1][1], chunk[-1][0])

    # Every append the child saw succeed is there, where it was told it is.
    for r in reported:
        assert batches.get(r.batch) == (r.stream, r.version, r.global_position), r
    # Only the one append in flight at each kill may have committed without being reported.
    unreported = set(batches) - {r.batch for r in reported}
    by_run: dict[str, int] = defaultdict(int)
    for name in unreported:
        by_run[name.split("-")[0]] += 1
    assert all(n == 1 for n in by_run.values()), by_run
    assert reported, "no append ever completed: the kills came too early to test anything"

    # The framework opens the file the kills left behind, reads it, and appends to it.
    async with App("after-kills", store=f"sqlite:///{db}", messages=[SigkillBatchItem]) as app:
        total = 0
        for stream in by_stream:
            envelopes = await app.read_stream(stream)
            assert [e.stream_position for e in envelopes] == list(range(1, len(envelopes) + 1))
            total += len(envelopes)
        assert total == len(rows)
        done = await app.append(
            "batch-0", [SigkillBatchItem(batch="after", index=i, filler="") for i in range(BATCH)]
        )
        assert done.version == len(by_stream.get("batch-0", ())) + BATCH
        assert done.global_position == len(rows) + BATCH
