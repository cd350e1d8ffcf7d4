"""Writing one group commit to SQLite: read what the checks need, plan, write the plan."""

from __future__ import annotations

import sqlite3

from tidings.backends._plan import Head, Result, plan_group
from tidings.backends.sqlite._database import QUERIES as Q
from tidings.backends.sqlite._database import json_array
from tidings.store import Transaction


def write_group(cursor: sqlite3.Cursor, txs: list[Transaction]) -> list[Result]:
    """Plan ``txs`` on what the file holds and write the plan, in the cursor's open write
    transaction: each transaction's result, in order."""
    head = _read_head(cursor, txs)
    plan = plan_group(txs, head)
    if plan.rows:
        now = plan.now
        cursor.executemany(Q["insert_log"], [(*row, now) for row in plan.rows])
    if plan.checkpoints:
        cursor.executemany(Q["move_checkpoint"], plan.checkpoint_rows())
    if plan.outcomes:
        cursor.executemany(Q["upsert_outcome"], plan.outcome_rows())
    for name, params in plan.statements:
        cursor.executemany(Q[name], params)
    return plan.results


def _read_head(cursor: sqlite3.Cursor, txs: list[Transaction]) -> Head:
    top, now = cursor.execute(Q["head"]).fetchone()
    head = Head(top, now, {}, {}, {})
    moved: set[tuple[str, int]] = set()
    for tx in txs:
        for op in tx.appends:
            if op.stream not in head.versions:
                found = cursor.execute(Q["stream_version"], (op.stream,)).fetchone()
                head.versions[op.stream] = found[0]
            for m in op.messages:
                found = cursor.execute(Q["known_id"], (m.id,)).fetchone()
                if found is not None:
                    head.known[m.id] = found[0]
        moved.update((m.subscription, m.partition) for m in tx.checkpoints)
    if moved:
        found = cursor.execute(Q["moved_partitions"], (json_array(moved),)).fetchall()
        head.partitions = {(s, p): (owner, position) for s, p, owner, position in found}
    return head
