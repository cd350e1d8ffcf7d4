"""Child process for test_sigkill_append: appends batches of 1,000 events, one append each, forever.

Usage: python _batch_appender.py DB_PATH STREAMS BATCH_SIZE

Prints ``ready`` once the store is open, then ``appended STREAM VERSION GLOBAL_POSITION BATCH`` after
each append returns, until it is killed (or, as a safety net, after a few minutes).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from tidings import App, Event

SAFETY_NET_SECONDS = 120


class SigkillBatchItem(Event):
    batch: str
    index: int
    filler: str


async def main(db: str, streams: int, batch_size: int) -> None:
    async with App("batch-appender", store=f"sqlite:///{db}", messages=[SigkillBatchItem]) as app:
        print("ready", flush=True)
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < SAFETY_NET_SECONDS:
            stream = f"batch-{n % streams}"
            batch = f"{os.getpid()}-{n}"
            events = [
                SigkillBatchItem(batch=batch, index=i, filler="x" * (i % 64))
                for i in range(batch_size)
            ]
            done = await app.append(stream, events)
            print(f"appended {stream} {done.version} {done.global_position} {batch}", flush=True)
            n += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
