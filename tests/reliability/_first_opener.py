"""Child process for test_two_processes: opens a (new) SQLite file when told to, and appends once.

Usage: python _first_opener.py DB_PATH NAME

Prints ``ready`` before touching the file, waits for ``go`` on stdin (so that several processes
open the file at the same moment), opens the store, appends one event and prints ``appended``.
Any exception ends the process with a traceback and a non-zero status.
"""

from __future__ import annotations

import asyncio
import sys

from tidings import App, Event


class FirstOpenerArrived(Event):
    opener: str


async def main(db: str, name: str) -> None:
    app = App(name, store=f"sqlite:///{db}", messages=[FirstOpenerArrived])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go' on stdin")
    async with app:
        await app.append("openers", [FirstOpenerArrived(opener=name)])
    print("appended", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
