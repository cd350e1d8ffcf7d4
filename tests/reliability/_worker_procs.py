"""Worker processes for the reliability tests: start ``python -m tidings worker`` on
``_crash_app.py``, kill or stop it, wait on conditions, and read the side-effect files it writes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from _crash_app import EFFECTS, PARTITIONS, PROJECTION

from tidings import App

APP_FILE = Path(__file__).with_name("_crash_app.py")
SUBSCRIPTIONS = (PROJECTION, EFFECTS)
EXIT_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass
class WorkerProc:
    """A worker process and where its log goes."""

    proc: asyncio.subprocess.Process
    worker_id: str
    log: Path
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")


async def start_worker(
    db: Path | None,
    effects: Path,
    worker_id: str,
    *,
    lease_ttl: float,
    batch_size: int,
    delay: float,
    store_url: str | None = None,
) -> WorkerProc:
    """Start a worker on the SQLite file ``db``, or on the store ``store_url`` (``db`` None)."""
    if (db is None) == (store_url is None):
        raise ValueError("start_worker: give either db or store_url")
    env = dict(os.environ, TIDINGS_CRASH_EFFECTS=str(effects), TIDINGS_CRASH_DELAY=str(delay))
    env.pop("TIDINGS_CRASH_DB", None)
    env.pop("TIDINGS_CRASH_STORE", None)
    if store_url is not None:
        env["TIDINGS_CRASH_STORE"] = store_url
    else:
        env["TIDINGS_CRASH_DB"] = str(db)
    log = effects.parent / f"worker-{worker_id}-{time.monotonic_ns()}.log"
    with _open_log(log) as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings",
            "worker",
            f"{APP_FILE}:app",
            "--lease-ttl",
            str(lease_ttl),
            "--batch-size",
            str(batch_size),
            "--worker-id",
            worker_id,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    return WorkerProc(proc, worker_id, log, time.monotonic())


async def sigkill(worker: WorkerProc) -> float:
    """SIGKILL the worker and wait until it is gone; it must have been running until then.
    Returns when (``time.monotonic()``) the signal was sent."""
    assert worker.proc.returncode is None, (
        f"worker {worker.worker_id} (pid {worker.pid}) exited by itself with "
        f"{worker.proc.returncode}:\n{worker.log_text()[-3000:]}"
    )
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(worker.proc.wait(), EXIT_TIMEOUT)
    assert worker.proc.returncode == -signal.SIGKILL, worker.proc.returncode
    return sent


async def sigterm(worker: WorkerProc) -> int:
    """Ask the worker to stop (SIGTERM) and return its exit status."""
    if worker.proc.returncode is None:
        worker.proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(worker.proc.wait(), EXIT_TIMEOUT)


async def wait_for(
    condition: Callable[[], Awaitable[T]],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.01,
) -> T:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = await condition()
        if found:
            return found
        if time.monotonic() > deadline:
            text = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        await asyncio.sleep(interval)


async def caught_up(app: App) -> bool:
    """Whether every partition of both subscriptions is at the log's last global position."""
    last = await app.store.last_position()
    parts = [p for p in await app.store.partitions() if p.subscription in SUBSCRIPTIONS]
    return len(parts) == len(SUBSCRIPTIONS) * PARTITIONS and all(p.position == last for p in parts)


async def checkpoints(app: App, subscription: str) -> dict[int, tuple[int, str | None]]:
    """``{partition: (position, owner)}`` of a subscription."""
    return {p.partition: (p.position, p.owner) for p in await app.store.partitions(subscription)}


@dataclass(frozen=True)
class Effect:
    """One line of a side-effect file."""

    pid: int
    stream: str
    n: int
    message_id: str


def effects_of(effects: Path, pid: int) -> list[Effect]:
    """The side effects process ``pid`` performed, in order (a last, partly written line of a
    killed process is left out)."""
    path = effects / f"effects-{pid}.log"
    if not path.exists():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        p, stream, n, message_id = line.split()
        assert int(p) == pid, line
        found.append(Effect(pid, stream, int(n), message_id))
    return found


def has_effects(effects: Path, pid: int) -> bool:
    path = effects / f"effects-{pid}.log"
    return path.exists() and path.stat().st_size > 0


async def log_positions(app: App) -> dict[str, tuple[int, str]]:
    """``{message_id: (global_position, stream)}`` of every message in the log."""
    found: dict[str, tuple[int, str]] = {}
    after = 0
    while True:
        page = await app.store.read_all(after=after, limit=5000)
        if not page:
            return found
        for env in page:
            found[env.id] = (env.global_position, env.stream)
        after = page[-1].global_position


def tail(text: str, chars: int = 3000) -> str:
    return text[-chars:]


def describe(workers: list[WorkerProc], **extra: Any) -> str:
    lines = [f"{k}={v}" for k, v in extra.items()]
    for w in workers:
        lines.append(f"--- worker {w.worker_id} pid {w.pid} rc {w.proc.returncode}")
        lines.append(tail(w.log_text(), 1500))
    return "\n".join(lines)
