"""Shared by the benchmark scripts: paired slots, interleaved rounds, the header and the table.

A *pair* is two contenders taking turns within one slot (A B B A A B ...), each in blocks of a
few milliseconds (or one whole trial at a time), so that both meet the same disk, server and CPU
weather. Each round gives one ratio; a pair is judged on the median ratio over rounds, and every
round's ratio is printed beside it. A *single* is one measurement per round judged against a
fixed floor (a rate, a latency). Rounds run every slot once, the order rotating.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import inspect
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tidings


@dataclass(frozen=True, slots=True)
class Sample:
    """``count`` events, rows, dispatches or jobs done in ``seconds``."""

    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


#: Runs a contender for about the given seconds (a one-shot trial ignores them) and says what it did.
Turn = Callable[[float], Awaitable[Sample]]
#: Sets a contender up on a fresh file, schema or app, hands out its turn, cleans up afterwards.
Contender = Callable[[], AbstractAsyncContextManager[Turn]]
#: One unit of work (a transaction, an invoke, a save); returns how many events or rows it wrote.
Step = Callable[[], Awaitable[int]] | Callable[[], int]


def repeat(step: Step) -> Turn:
    """A turn of one caller doing ``step`` (a coroutine function or a blocking one) until time's up."""

    async def turn(seconds: float) -> Sample:
        count = 0
        start = now = time.perf_counter()
        deadline = start + seconds
        if inspect.iscoroutinefunction(step):
            while now < deadline:
                count += await step()
                now = time.perf_counter()
        else:
            while now < deadline:
                count += step()  # type: ignore[operator]
                now = time.perf_counter()
        return Sample(count, now - start)

    return turn


def concurrently(step: Callable[[], Awaitable[int]], callers: int) -> Turn:
    """A turn of ``callers`` asyncio tasks, each doing ``step`` one after the other."""

    async def turn(seconds: float) -> Sample:
        start = time.perf_counter()
        deadline = start + seconds

        async def caller() -> int:
            done = 0
            while time.perf_counter() < deadline:
                done += await step()
            return done

        counts = await asyncio.gather(*(caller() for _ in range(callers)))
        return Sample(sum(counts), time.perf_counter() - start)

    return turn


def in_threads(step: Callable[[], int], threads: int) -> Turn:
    """A turn of ``threads`` threads, each doing a blocking ``step`` one after the other (the event
    loop waits meanwhile)."""

    async def turn(seconds: float) -> Sample:
        start = time.perf_counter()
        deadline = start + seconds
        counts = [0] * threads

        def work(index: int) -> None:
            while time.perf_counter() < deadline:
                counts[index] += step()

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return Sample(sum(counts), time.perf_counter() - start)

    return turn


# --- floors, checks and files ------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """What a value must be: ``>= bound`` or ``<= bound`` (``<`` too)."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        return {">=": value >= self.bound, "<=": value <= self.bound, "<": value < self.bound}[
            self.op
        ]

    def __str__(self) -> str:
        return f"{self.op} {self.bound:,g}"


FAILED_CHECKS: list[str] = []


def check(ok: bool, what: str) -> None:
    """Record a failed sanity check (shown under the table) instead of aborting the run."""
    if not ok:
        FAILED_CHECKS.append(what)
        print(f"CHECK FAILED: {what}", file=sys.stderr, flush=True)


_scratch: list[Path] = []
_numbers = itertools.count(1)


def scratch() -> Path:
    """The run's directory for database files (``--dir``, or a temporary one), removed by main."""
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="tidings-bench-")).resolve())
    return _scratch[0]


@contextlib.contextmanager
def fresh_file(tag: str) -> Iterator[Path]:
    """A new database path in the scratch directory; it and its siblings (``-wal``, ``-shm``,
    ``<stem>-...``) are removed afterwards."""
    path = scratch() / f"{tag}-{next(_numbers)}.db"
    try:
        yield path
    finally:
        for leftover in path.parent.glob(f"{path.stem}*"):
            leftover.unlink()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --- slots -------------------------------------------------------------------------------------


@dataclass
class Pair:
    """Two contenders taking turns within one slot; each round's value is a's / b's (rates, or
    times per operation with ``unit="µs"``)."""

    key: str
    label: str
    names: tuple[str, str]
    a: Contender
    b: Contender
    floor: Floor | None = None
    #: "/s" (rates) or "µs" (time per operation)
    unit: str = "/s"
    #: the length of one turn; each contender gets turns until it has run ``--seconds``
    block: float = 0.02
    #: for one-shot trials: at least this many turns each (``--seconds`` is then not used)
    turns: int = 0
    #: an untimed first turn of each contender (0: none)
    warm: float = 0.05
    #: "memory" slots last ``--memory-seconds``
    kind: str = "disk"
    values: list[float] = field(default_factory=list)
    sides: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))

    async def run(self, seconds: float) -> None:
        async with self.a() as turn_a, self.b() as turn_b:
            turns = (turn_a, turn_b)
            if self.warm:
                for turn in turns:
                    await turn(self.warm)
            counts, times = [0, 0], [0.0, 0.0]
            done = 0
            want = 0.0 if self.turns else seconds
            while min(times) < want or done < self.turns:
                for i in (0, 1) if (done + len(self.values)) % 2 == 0 else (1, 0):
                    sample = await turns[i](self.block)
                    counts[i] += sample.count
                    times[i] += sample.seconds
                done += 1
        rates = [Sample(c, t).rate for c, t in zip(counts, times, strict=True)]
        shown = [1e6 / r for r in rates] if self.unit == "µs" else rates
        for side, value in zip(self.sides, shown, strict=True):
            side.append(value)
        self.values.append(shown[0] / shown[1])

    def detail(self) -> str:
        a, b = (statistics.median(side) for side in self.sides)
        sep = "" if self.unit == "/s" else " "
        return f"{self.names[0]} {fmt(a)}{sep}{self.unit}, {self.names[1]} {fmt(b)}{sep}{self.unit}"


#: Measures once; returns named values, the first of which is judged (e.g. {"p99 ms": 4.2, ...}).
Measure = Callable[[], Awaitable[dict[str, float]]]


@dataclass
class Single:
    """One measurement per round, judged on its first value against a fixed floor."""

    key: str
    label: str
    measure: Measure
    floor: Floor | None = None
    unit: str = "events/s"
    kind: str = "disk"
    values: list[float] = field(default_factory=list)
    others: dict[str, list[float]] = field(default_factory=dict)

    async def run(self, seconds: float) -> None:
        found = await self.measure()
        first, *rest = found
        self.values.append(found[first])
        for name in rest:
            self.others.setdefault(name, []).append(found[name])

    def detail(self) -> str:
        """The other values' medians; a name's last word is its unit (``"p50 ms"``)."""
        shown = []
        for name, values in self.others.items():
            what, _, unit = name.rpartition(" ")
            shown.append(f"{what} {fmt(statistics.median(values))} {unit}")
        return ", ".join(shown)


Slot = Pair | Single


# --- running and the table ---------------------------------------------------------------------


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


async def run_rounds(slots: Sequence[Slot], args: argparse.Namespace) -> None:
    for number in range(args.rounds):
        started = time.perf_counter()
        shift = number % len(slots)
        for slot in [*slots[shift:], *slots[:shift]]:
            await slot.run(args.memory_seconds if slot.kind == "memory" else args.seconds)
        print(
            f"round {number + 1}/{args.rounds} done in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )


def table(slots: Sequence[Slot]) -> list[str]:
    """Each slot's median, floor and verdict, every round's value, and what it is made of."""
    head = f"{'key':<10} {'target':<58} {'median':>16} {'floor':>16}  {'verdict':<7}  rounds"
    lines = [head, "-" * len(head)]
    for slot in slots:
        if not slot.values:
            continue
        median = statistics.median(slot.values)
        unit = "x" if isinstance(slot, Pair) else f" {slot.unit}"
        verdict = "info" if slot.floor is None else "MET" if slot.floor.met(median) else "MISSED"
        floor = "" if slot.floor is None else f"{slot.floor}{unit}"
        rounds = " ".join(fmt(v) for v in slot.values)
        lines.append(
            f"{slot.key:<10} {slot.label:<58} {fmt(median) + unit:>16} {floor:>16}  {verdict:<7}"
            f"  {rounds}"
        )
        if slot.detail():
            lines.append(f"{'':<10}   medians: {slot.detail()}")
    if FAILED_CHECKS:
        lines += ["", "FAILED CHECKS (the numbers above may be wrong):"]
        lines += [f"  {what}" for what in FAILED_CHECKS]
    return lines


# --- the machine, the versions, the command ----------------------------------------------------


def _first(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "?"


def _tidings_commit() -> str:
    """The commit of the tidings being measured (put another checkout's ``src`` first on
    ``PYTHONPATH`` to measure it)."""
    root = Path(tidings.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], cwd=root).returncode
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"{sha}{' + uncommitted changes' if dirty else ''}"


def _load() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])
    return "?"


def header(packages: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Date, command, machine, versions of Python and ``packages``, tidings' commit, load."""
    mem = _first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem) / 1024**2:.1f} GiB" if mem.isdigit() else "?"
    found = []
    for name in packages:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    pythonpath = os.environ.get("PYTHONPATH")
    python = os.path.relpath(sys.executable) if sys.prefix != sys.base_prefix else sys.executable
    return [
        f"date      {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"command   {f'PYTHONPATH={pythonpath} ' if pythonpath else ''}{python} {' '.join(sys.argv)}",
        f"machine   {os.cpu_count()} CPUs ({_first('/proc/cpuinfo', 'model name')}), RAM {ram}, "
        f"kernel {platform.release()}, load {_load()} (1, 5, 15 min)",
        f"versions  python {platform.python_version()}, {', '.join(found)}",
        f"tidings   {_tidings_commit()} ({Path(tidings.__file__).resolve().parent})",
        *extra,
    ]


def parser(doc: str | None, *, rounds: int, seconds: float) -> argparse.ArgumentParser:
    """The options every script takes; a script adds its own and then calls :func:`main`."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=rounds, help=f"rounds (default {rounds})")
    p.add_argument("--seconds", type=float, default=seconds, help="per contender in a rate slot")
    p.add_argument("--memory-seconds", type=float, default=0.4, help="the same, in-memory slots")
    p.add_argument("--quick", action="store_true", help="fewer and shorter rounds (minutes)")
    p.add_argument("--only", default="", help="comma-separated key prefixes (keys: the table)")
    p.add_argument("--dir", type=Path, default=None, help="where database files go (default: tmp)")
    return p


def main(
    slots: Sequence[Slot],
    args: argparse.Namespace,
    head: Sequence[str],
    around: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
) -> None:
    """Run the chosen slots for ``args.rounds`` rounds (``around``, if given, wraps the whole run:
    a database to create and drop), then print the header and the table."""
    if args.only:
        prefixes = tuple(p.strip() for p in args.only.split(",") if p.strip())
        slots = [s for s in slots if s.key.startswith(prefixes)]
    if not slots:
        raise SystemExit(f"no slot's key starts with any of {args.only!r}")
    if args.dir is not None:
        _scratch.append(Path(tempfile.mkdtemp(prefix="tidings-bench-", dir=args.dir)).resolve())
    print("\n".join(head), flush=True)
    print(
        f"plan      {len(slots)} slots x {args.rounds} rounds: {', '.join(s.key for s in slots)}\n"
    )

    async def go() -> None:
        async with around() if around is not None else contextlib.nullcontext():
            await run_rounds(slots, args)

    try:
        asyncio.run(go())
    finally:
        if _scratch:
            shutil.rmtree(_scratch[0], ignore_errors=True)
    print("\n".join(table(slots)), flush=True)


def one_shot(trial: Callable[[], Awaitable[Sample]]) -> Contender:
    """A contender whose every turn is one whole trial that sets itself up and times itself."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        async def turn(seconds: float) -> Sample:
            return await trial()

        yield turn

    return contender
