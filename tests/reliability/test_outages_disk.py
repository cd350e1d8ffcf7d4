"""A full disk under SQLite: a tmpfs of 2 MiB, filled by another file while the app runs.

A publish that hits the full disk raises ``StoreUnavailable`` saying so, and writes nothing (the
log stays gapless, the message is not in it). A worker whose commits hit it pauses as for any
outage: no message is attempted, held or dead for it; once space is freed, it commits what it
handled and goes on.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from _private_postgres import unavailable
from _worker_procs import wait_for

from tidings import App, Context, Event
from tidings.delivery.policy import RetryPolicy
from tidings.errors import StoreUnavailable


class Note(Event, type_name="disk.Note"):
    n: int
    text: str


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs of 2 MiB of its own."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        unavailable("a full-disk test mounts a tmpfs, which needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"mounting a tmpfs was refused: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def _free(path: Path) -> None:
    path.unlink()


async def test_a_full_disk_writes_nothing_and_the_worker_resumes(small_disk: Path) -> None:
    app = App("disk", store=f"sqlite:///{small_disk / 'app.db'}", messages=[Note])
    gate = asyncio.Event()
    handled: list[int] = []

    @app.subscriber("notes", policy=RetryPolicy(max_attempts=2, immediate=1, backoff=0.1))
    async def note(event: Note, ctx: Context) -> None:
        await gate.wait()
        handled.append(event.n)
        ctx.put("notes", str(event.n), {"text": event.text * 4})

    async with app:
        for n in range(20):
            await app.publish(Note(n=n, text=f"{n}" * 2000), stream=f"notes-{n % 4}")
        worker = app.worker(lease_ttl=2.0, batch_size=50)
        running = asyncio.create_task(worker.run())
        await wait_for(_true(lambda: bool(worker.runners)), 10, "the worker to start")
        filler = small_disk / "filler"
        await asyncio.to_thread(_fill, filler)

        # A publish on the full disk: a clear error, nothing written.
        last = await app.store.last_position()
        with pytest.raises(StoreUnavailable) as raised:
            for n in range(20, 220):
                await app.publish(Note(n=n, text="x" * 4000), stream="notes-full")
        assert "full" in str(raised.value), raised.value
        after = await app.store.last_position()
        log = await app.store.read_all(limit=10_000)
        assert [e.global_position for e in log] == list(range(1, after + 1))
        assert all(e.stream == "notes-full" for e in log[last:])
        failed_n = 20 + (after - last)
        assert failed_n not in {msg["n"] for msg in _payloads(log)}

        # The worker's commits hit the full disk: it pauses, and holds nothing.
        gate.set()
        await wait_for(_true(lambda: worker.outages.down), 30, "the worker to meet the full disk")
        await asyncio.sleep(1.0)  # the disk stays full for a while: the worker keeps waiting
        assert worker.outages.down
        assert await app.store.held() == []
        await asyncio.to_thread(_free, filler)
        await wait_for(
            _caught_up(app, after), 30, lambda: f"the worker to resume; handled {handled}"
        )
        assert not worker.outages.down
        assert worker.outages.count >= 1
        assert await app.store.held() == []
        worker.stop()
        await asyncio.wait_for(running, 30)
        notes = dict(await app.store.documents("notes"))
    assert set(notes) == {str(n) for n in range(failed_n)}
    assert sorted(handled) == list(range(failed_n)), "handled again while the disk was full"


def _payloads(log: list) -> list[dict]:  # type: ignore[type-arg]
    import json

    return [json.loads(e.data) for e in log]


def _true(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


def _caught_up(app: App, last: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        parts = await app.store.partitions("notes")
        return bool(parts) and all(p.position == last for p in parts)

    return check
