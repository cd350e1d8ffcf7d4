"""Pieces the database backends share: rows turned into a ``Held`` or into the release of due
scheduled messages, and settling the futures of a group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from tidings.messages import NewMessage
from tidings.records import ANY, AppendOp, Attempt, Held, Transaction

_history = msgspec.json.Decoder(list[Attempt])


def held_from_row(row: Sequence[Any]) -> Held:
    """A ``Held`` from a row of (subscription, partition, stream, global_position, message_id,
    type, status, attempts, error, traceback, history JSON, due_at, first_failed_at,
    last_failed_at, id)."""
    (
        sub,
        part,
        stream,
        gp,
        mid,
        type_,
        status,
        attempts,
        error,
        tb,
        history,
        due_at,
        first,
        last,
        id_,
    ) = row
    attempts_made = _history.decode(bytes(history)) if history else []
    return Held(
        sub,
        part,
        stream,
        gp,
        mid,
        type_,
        status,
        attempts,
        error,
        tb,
        attempts_made,
        None,
        due_at,
        first,
        last,
        id_,
    )


def settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """Resolve a commit's future once (a cancelled caller's future is left alone)."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def release(rows: Sequence[Sequence[Any]]) -> Transaction:
    """The transaction that appends due scheduled messages, rows of (id, stream, kind, type,
    version, data, correlation_id, causation_id, headers), and forgets them. Two workers
    releasing the same rows at once append each message once: its id is known by then."""
    tx = Transaction(unscheduled=[row[0] for row in rows])
    for mid, stream, kind, type_, version, data, corr, cause, headers in rows:
        message = NewMessage(mid, kind, type_, version, data, corr, cause, headers)
        tx.appends.append(AppendOp(stream, [message], ANY))
    return tx
