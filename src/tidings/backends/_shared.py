"""Pieces the database backends share: turning a held-message row into a ``Held``, and settling
the futures of a group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from tidings.store import Attempt, Held

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
