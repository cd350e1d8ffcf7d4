"""SQLite's store beside another connection to its file, and over a big log.

Commits are planned on what the connection remembers: a lone message goes in as one statement,
and when what was remembered no longer holds (a row taken, the file locked) the commit is
planned again on what is read. A read of the whole log runs apart from the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from tidings import App, Event, WrongExpectedVersion


class Noted(Event):
    n: int


@contextmanager
def other_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection to the file: another process, as far as SQLite's locks go."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def insert(conn: sqlite3.Connection, stream: str, stream_position: int) -> int:
    """Append a row as another writer would, at the log's next global position; return it."""
    (top,) = conn.execute("SELECT coalesce(max(global_position), 0) FROM tidings_log").fetchone()
    conn.execute(
        "INSERT INTO tidings_log (global_position, stream, stream_position, id, kind, type, "
        "version, data, correlation_id, causation_id, headers, recorded_at) "
        "VALUES (?, ?, ?, ?, 'event', 'Noted', 1, ?, NULL, NULL, NULL, ?)",
        (top + 1, stream, stream_position, f"other-{top + 1}", b'{"n":-1}', time.time()),
    )
    return int(top + 1)


@asynccontextmanager
async def armed(path: Path) -> AsyncIterator[App]:
    """An open App that has committed alone a few times: its next lone message is planned on
    what it remembers, without reading."""
    async with App("sqlite-commit", store=f"sqlite:///{path}") as app:
        for n in range(3):
            await app.append("s", [Noted(n=n)])
        yield app


def positions(path: Path) -> list[tuple[int, str, int]]:
    with other_connection(path) as conn:
        rows = conn.execute(
            "SELECT global_position, stream, stream_position FROM tidings_log "
            "ORDER BY global_position"
        ).fetchall()
    return [(int(g), str(s), int(p)) for g, s, p in rows]


async def test_a_lone_append_after_another_writer_lands_after_its_row(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with armed(path) as app:
        with other_connection(path) as other:
            theirs = insert(other, "elsewhere", 1)
        done = await app.append("s", [Noted(n=3)])
        assert (done.global_position, done.version) == (theirs + 1, 4)
        assert positions(path) == [
            (1, "s", 1),
            (2, "s", 2),
            (3, "s", 3),
            (4, "elsewhere", 1),
            (5, "s", 4),
        ]


async def test_a_lone_append_at_a_version_another_writer_moved_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with armed(path) as app:
        with other_connection(path) as other:
            insert(other, "s", 4)
        with pytest.raises(WrongExpectedVersion) as refused:
            await app.append("s", [Noted(n=3)], expected_version=3)
        assert refused.value.actual == 4
        done = await app.append("s", [Noted(n=4)], expected_version=4)
        assert (done.global_position, done.version) == (5, 5)


async def test_a_lone_append_waits_out_another_writers_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with armed(path) as app:
        with other_connection(path) as other:
            other.execute("BEGIN IMMEDIATE")
            theirs = insert(other, "elsewhere", 1)
            appending = asyncio.create_task(app.append("s", [Noted(n=3)]))
            await asyncio.sleep(0)  # the append's first step ran into the lock
            assert not appending.done()
            other.execute("COMMIT")
        done = await asyncio.wait_for(appending, timeout=10)
        assert (done.global_position, done.version) == (theirs + 1, 4)
        assert [g for g, _, _ in positions(path)] == [1, 2, 3, 4, 5]


async def test_counting_the_log_by_type_leaves_the_event_loop_free(tmp_path: Path) -> None:
    """``type_counts`` reads the whole log (a worker asks it when it starts): on the loop's
    thread, a big log would hold up every other task for as long as the read lasts."""
    path = tmp_path / "big.db"
    async with armed(path) as app:
        with other_connection(path) as other:
            other.execute("BEGIN")
            other.executemany(
                "INSERT INTO tidings_log (global_position, stream, stream_position, id, kind, "
                "type, version, data, recorded_at) VALUES (?, ?, 1, ?, 'event', ?, 1, x'7b7d', 0)",
                ((n, f"big-{n}", f"big-{n}", f"Big{n % 3}") for n in range(4, 300_004)),
            )
            other.execute("COMMIT")
        ticks = 0
        counting = asyncio.create_task(app.store.type_counts())
        while not counting.done():
            ticks += 1
            await asyncio.sleep(0)
        counts = {c.type: c.count for c in counting.result()}
        assert counts == {"Big0": 100_000, "Big1": 100_000, "Big2": 100_000, "Noted": 3}
        assert ticks > 10, f"the event loop turned {ticks} times while the log was read"
