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
    streams = {op.stream for tx in txs for op in tx.appends}
    ids = {m.id for tx in txs for op in tx.appends for m in op.messages}
    moved = {(m.subscription, m.partition) for tx in txs for m in tx.checkpoints}
    top, now = cursor.execute(Q["head"]).fetchone()
    head = Head(
        top,
        now,
        dict(cursor.execute(Q["stream_versions"], (json_array(streams),)).fetchall())
        if streams
        else {},
        dict(cursor.execute(Q["known_ids"], (json_array(ids),)).fetchall()) if ids else {},
        {
            (s, p): (owner, position)
            for s, p, owner, position in cursor.execute(Q["moved_partitions"], (json_array(moved),))
        }
        if moved
        else {},
    )
    plan = plan_group(txs, head)
    if plan.rows:
        cursor.executemany(Q["insert_log"], [(*row, now) for row in plan.rows])
    if plan.checkpoints:
        cursor.executemany(Q["move_checkpoint"], plan.checkpoint_rows())
    if plan.outcomes:
        cursor.executemany(Q["upsert_outcome"], plan.outcome_rows())
    for name, params in plan.statements:
        cursor.executemany(Q[name], params)
    return plan.results
