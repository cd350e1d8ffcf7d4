"""Child process for test_postgres_gaps: several writers, each with a store (and so a connection)
of its own, committing events while a reader in the test process reads the log.

Usage: python _gap_writer.py URL SCHEMA NAME TASKS EVENTS_PER_TASK SEED REPORT_PATH

Half the writers (even task numbers) connect with ``tidings_test.hold=on``: the trigger the test
installs (see test_postgres_gaps) then holds each of their transactions open for a random time after
its rows are written and before its ``COMMIT`` (the window in which a sequence-numbered log lets a
reader see a later position before an earlier one), and rolls 5% of them back there instead. Their
transactions also add an audit entry, so that they take the store's long way (a database
transaction); the other half only append, which the store does in one statement, so both ways of
taking the append lock race each other. Prints ``ready``, waits for ``go`` on stdin, runs, writes a
JSON report to REPORT_PATH: every committed event as ``[id, global position]`` and every
rolled-back id.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

from psycopg.conninfo import make_conninfo

from tidings.backends.postgres import PostgresStore
from tidings.errors import StoreError
from tidings.ids import uuid7
from tidings.messages import NewMessage
from tidings.records import ANY, AppendOp, AuditEntry, Transaction

STREAMS = 8
MAX_BATCH = 8


async def writer(
    url: str, schema: str, name: str, quota: int, rng: random.Random, hold: bool
) -> tuple[list[tuple[str, int]], list[str]]:
    if hold:
        url = make_conninfo(url, options="-c jit=off -c tidings_test.hold=on")
    store = PostgresStore(url, schema=schema, max_connections=1)
    committed: list[tuple[str, int]] = []
    rolled_back: list[str] = []
    await store.open()
    try:
        while len(committed) < quota:
            n = min(rng.randint(1, MAX_BATCH), quota - len(committed))
            messages = [
                NewMessage(uuid7(), "event", "GapNoted", 1, b'{"by":"%s"}' % name.encode())
                for _ in range(n)
            ]
            tx = Transaction([AppendOp(f"gap-{rng.randrange(STREAMS)}", messages, ANY)])
            if hold:
                tx.audit.append(AuditEntry(name, "gap.write", "log"))
            try:
                (done,) = await store.commit(tx)
            except StoreError as refused:
                assert "rolled back by the test" in str(refused), refused
                rolled_back.extend(m.id for m in messages)
                continue
            first = done.global_position - n + 1
            committed.extend((m.id, first + i) for i, m in enumerate(messages))
    finally:
        await store.close()
    return committed, rolled_back


async def run(
    url: str, schema: str, name: str, tasks: int, per_task: int, seed: str
) -> dict[str, list[object]]:
    rngs = [random.Random(f"{seed}-{t}") for t in range(tasks)]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    results = await asyncio.gather(
        *(
            writer(url, schema, f"{name}.{t}", per_task, rng, hold=t % 2 == 0)
            for t, rng in enumerate(rngs)
        )
    )
    return {
        "committed": [c for committed, _ in results for c in committed],
        "rolled_back": [r for _, rolled_back in results for r in rolled_back],
    }


if __name__ == "__main__":
    url, schema, name, tasks, per_task, seed, report = sys.argv[1:]
    found = asyncio.run(run(url, schema, name, int(tasks), int(per_task), seed))
    Path(report).write_text(json.dumps(found))
