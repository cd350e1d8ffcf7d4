"""The operator's view of what subscriptions hold back, and the actions that repair it.

Every action is written to the audit trail in the same transaction that performs it. Retrying and
skipping only mark rows; the worker holding the stream's partition replays them, in order.
"""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Awaitable, Callable

import msgspec

from tidings.committer import Committer
from tidings.delivery.subscriptions import actor_name
from tidings.errors import DeadLetterNotFound, TidingsError
from tidings.messages import Envelope
from tidings.records import DEAD, REPLAY, WAITING, AuditEntry, Held, HeldDelete, Transaction


class DeadLetter(msgspec.Struct, frozen=True):
    """A held message with what an operator needs to decide: the message itself, its cause, and
    how many messages of its stream wait behind it."""

    held: Held
    envelope: Envelope | None
    waiting: int


class ErrorGroup(msgspec.Struct, frozen=True):
    """Dead letters of one subscription that failed with the same error."""

    subscription: str
    error: str
    count: int
    ids: list[int]


class DeadLetters:
    """``app.dead_letters``: list, show, retry and skip. ``ready`` opens the store (once)."""

    def __init__(self, committer: Committer, ready: Callable[[], Awaitable[object]]) -> None:
        self.committer = committer
        self.store = committer.store
        self.ready = ready

    async def list(
        self,
        *,
        subscription: str | None = None,
        stream: str | None = None,
        status: str | None = DEAD,
        limit: int = 100,
    ) -> builtins.list[Held]:
        """Held messages, dead ones by default (``status=None`` for every held message)."""
        await self.ready()
        return await self.store.held(
            subscription=subscription, stream=stream, status=status, limit=limit
        )

    async def get(self, id: int) -> Held:
        """One held message by id."""
        await self.ready()
        found = await self.store.held(id=id, limit=1)
        if not found:
            raise DeadLetterNotFound(f"no held message #{id}; list them with `tidings dlq list`")
        return found[0]

    async def show(self, id: int) -> DeadLetter:
        """A held message with its envelope and the number of messages waiting behind it."""
        held = await self.get(id)
        found = await self.store.read_all(after=held.global_position - 1, limit=1)
        envelope = found[0] if found and found[0].global_position == held.global_position else None
        behind = await self.store.held(
            subscription=held.subscription, stream=held.stream, status=WAITING
        )
        return DeadLetter(
            held, envelope, sum(1 for h in behind if h.global_position > held.global_position)
        )

    async def groups(self, *, subscription: str | None = None) -> builtins.list[ErrorGroup]:
        """Dead letters grouped by subscription and error, largest group first."""
        dead = await self.list(subscription=subscription, limit=100_000)
        counts = Counter((h.subscription, h.error or "") for h in dead)
        return [
            ErrorGroup(
                sub,
                error,
                n,
                [h.id for h in dead if (h.subscription, h.error or "") == (sub, error)],
            )
            for (sub, error), n in counts.most_common()
        ]

    async def _head(self, held: Held) -> Held:
        rows = await self.store.held(subscription=held.subscription, stream=held.stream, limit=1)
        return rows[0]

    async def retry(self, id: int, *, actor: str | None = None) -> Held:
        """Handle the message again now, with the whole retry policy from the start; the messages
        of its stream waiting behind it follow, in order. If it fails to the end again, it is dead
        again, with the new error (its earlier attempts stay in its history)."""
        held = await self.get(id)
        head = await self._head(held)
        if head.global_position != held.global_position and held.status == WAITING:
            raise TidingsError(
                f"#{id} waits behind #{head.id} in stream {held.stream!r}; retry or skip #{head.id} "
                "and the messages behind it follow in order"
            )
        await self.retry_held([held], "dlq.retry", actor)
        return held

    async def retry_stream(
        self, subscription: str, stream: str, *, actor: str | None = None
    ) -> int:
        """Retry the held message at the head of one stream (the rest follow). Returns 0 or 1."""
        await self.ready()
        rows = await self.store.held(subscription=subscription, stream=stream, limit=1)
        if not rows or rows[0].status == WAITING:
            return 0
        await self.retry_held(rows, "dlq.retry-stream", actor)
        return 1

    async def select(
        self, *, error: str | None = None, subscription: str | None = None
    ) -> builtins.list[Held]:
        """Every dead letter (of ``subscription``) whose error starts with ``error`` (any error
        when ``None``): what the bulk actions act on."""
        return [
            h
            for h in await self.list(subscription=subscription, limit=1_000_000)
            if error is None or (h.error or "").startswith(error)
        ]

    async def retry_error(
        self, error: str, *, subscription: str | None = None, actor: str | None = None
    ) -> int:
        """Retry every dead letter whose error is ``error`` (exactly, or starting with it)."""
        dead = await self.select(error=error, subscription=subscription)
        if dead:
            await self.retry_held(dead, "dlq.retry-error", actor)
        return len(dead)

    async def retry_all(self, *, subscription: str | None = None, actor: str | None = None) -> int:
        """Retry every dead letter (of ``subscription``)."""
        dead = await self.select(subscription=subscription)
        if dead:
            await self.retry_held(dead, "dlq.retry-all", actor)
        return len(dead)

    async def skip(self, id: int, *, actor: str | None = None) -> Held:
        """Give up on a held message: it is not handled, and the messages waiting behind it in its
        stream are released, in order."""
        held = await self.get(id)
        await self.skip_held([held], "dlq.skip", actor)
        return held

    async def skip_error(
        self, error: str, *, subscription: str | None = None, actor: str | None = None
    ) -> int:
        """Skip every dead letter whose error is ``error`` (exactly, or starting with it)."""
        dead = await self.select(error=error, subscription=subscription)
        await self.skip_held(dead, "dlq.skip-error", actor)
        return len(dead)

    async def skip_all(self, *, subscription: str | None = None, actor: str | None = None) -> int:
        """Skip every dead letter (of ``subscription``)."""
        dead = await self.select(subscription=subscription)
        await self.skip_held(dead, "dlq.skip-all", actor)
        return len(dead)

    async def skip_held(
        self,
        rows: builtins.list[Held],
        action: str = "dlq.skip",
        actor: str | None = None,
        note: str = "",
    ) -> None:
        """Skip held messages as read (a cause's, say) in one transaction, audited as ``action``
        (with ``note``); in each stream, the first message left behind the first skipped one
        becomes due (the worker replays it and the rest in order)."""
        if not rows:
            return
        tx = Transaction(audit=[self._audit(action, h, actor, note) for h in rows])
        streams: dict[tuple[str, str], set[int]] = {}
        for h in rows:
            streams.setdefault((h.subscription, h.stream), set()).add(h.global_position)
        for (subscription, stream), skipped in sorted(streams.items()):
            tx.unheld += [HeldDelete(subscription, p) for p in sorted(skipped)]
            held = await self.store.held(subscription=subscription, stream=stream, limit=1_000_000)
            left = [
                h
                for h in held
                if h.global_position > min(skipped) and h.global_position not in skipped
            ][:1]
            tx.held += [
                msgspec.structs.replace(h, status=REPLAY, due_in=None)
                for h in left
                if h.status == WAITING
            ]
        await self.committer.commit(tx)

    async def retry_held(
        self,
        rows: builtins.list[Held],
        action: str = "dlq.retry",
        actor: str | None = None,
        note: str = "",
    ) -> None:
        """Retry held messages as read (a cause's, say) in one transaction, audited as
        ``action`` (with ``note``)."""
        tx = Transaction(
            held=[
                msgspec.structs.replace(h, status=REPLAY, due_in=None, due_at=None) for h in rows
            ],
            audit=[self._audit(action, h, actor, note) for h in rows],
        )
        await self.committer.commit(tx)

    @staticmethod
    def _audit(action: str, held: Held, actor: str | None, note: str = "") -> AuditEntry:
        where = f"in stream {held.stream!r}" + (f" ({note})" if note else "")
        return AuditEntry(
            actor_name(actor),
            action,
            f"{held.subscription}#{held.global_position}",
            f"#{held.id} {held.type} {held.message_id} {where}: {held.error or ''}",
        )
