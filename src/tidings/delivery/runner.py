"""A runner: one subscription in one worker — its leases, its batches, its held messages.

See :mod:`tidings.delivery.worker` for the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import CoroutineType as Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from tidings.context import Context, Overlay
from tidings.delivery.alerts import Alert
from tidings.delivery.policy import RetryPolicy
from tidings.errors import (
    ConfigurationError,
    LeaseLost,
    MessageDecodeError,
    Refused,
    StoreError,
    WrongExpectedVersion,
)
from tidings.messages import CommandFailed, Envelope
from tidings.store import (
    ANY,
    DEAD,
    FAILED,
    REFUSED,
    REPLAY,
    RETRYING,
    SUCCEEDED,
    WAITING,
    AppendOp,
    Attempt,
    CheckpointMove,
    Held,
    HeldDelete,
    Outcome,
    Transaction,
    grow,
)

if TYPE_CHECKING:
    from tidings.delivery.worker import Worker
    from tidings.handlers import CommandHandler, Subscriber

log = logging.getLogger("tidings.worker")
_encoder = msgspec.json.Encoder()
#: How many failed attempts a held message keeps in its history.
_HISTORY = 50


def partition_of(stream: str, partitions: int) -> int:
    """The partition a stream belongs to (stable across processes and versions)."""
    return zlib.crc32(stream.encode()) % partitions


@dataclass(frozen=True)
class Route:
    """What one subscription delivers, and to whom."""

    name: str
    types: tuple[str, ...]
    fn: Any
    #: as CommandHandler.is_async
    is_async: bool | None
    policy: RetryPolicy
    start: str
    partitions: int
    #: set for the subscription of a sent-command handler
    command: CommandHandler | None = None

    @classmethod
    def for_subscriber(cls, sub: Subscriber) -> Route:
        return cls(
            sub.name,
            tuple(e.__type_name__ for e in sub.events),
            sub.fn,
            sub.is_async,
            sub.policy,
            sub.start,
            sub.partitions,
        )

    @classmethod
    def for_command(cls, handler: CommandHandler) -> Route:
        return cls(
            handler.subscription,
            (handler.command.__type_name__,),
            handler.fn,
            handler.is_async,
            handler.policy,
            "beginning",
            8,
            handler,
        )


@dataclass
class Handled:
    """What running a handler on one message came to."""

    attempts: int
    ok: bool = False
    tx: Transaction | None = None
    result: bytes | None = None
    refused: Refused | None = None
    error: str = ""
    traceback: str = ""
    final: bool = False
    due_in: float | None = None
    history: list[Attempt] = field(default_factory=list)


class Runner:
    """Runs one subscription in one worker."""

    def __init__(self, worker: Worker, route: Route) -> None:
        self.worker = worker
        self.app = worker.app
        self.store = worker.app.store
        self.route = route
        self.positions: dict[int, int] = {}
        self.blocked: set[str] = set()
        self.wakeup = asyncio.Event()
        self.next_claim = 0.0
        self.next_replay = 0.0
        self._partition_of: dict[str, int] = {}

    # --- leases -----------------------------------------------------------------------------

    async def setup(self) -> None:
        start = 0 if self.route.start == "beginning" else await self.store.last_position()
        await self.store.setup_subscription(self.route.name, self.route.partitions, start)

    async def claim(self, *, alone: bool = False) -> None:
        """Renew this worker's leases and take its fair share of the partitions.

        A worker is alive while its heartbeat is younger than half the lease; a killed worker's
        leases run out at most one lease after its last renewal, and the next claim is timed
        for that moment, so its partitions are taken over within the lease time.
        """
        ttl = self.worker.lease_ttl
        live = 1 if alone else await self.store.heartbeat(self.worker.id, ttl / 2)
        want = math.ceil(self.route.partitions / max(1, live))
        before = set(self.positions)
        self.positions = await self.store.claim(self.route.name, self.worker.id, want, ttl)
        if set(self.positions) != before and self.route.policy.sequenced:
            self.blocked = await self.store.held_streams(self.route.name, list(self.positions))
        wait = ttl / 3
        if not alone:
            now = await self.store.now()
            others = [
                p.lease_expires
                for p in await self.store.partitions(self.route.name)
                if p.owner not in (None, self.worker.id) and p.lease_expires is not None
            ]
            if others:
                wait = max(0.01, min(wait, min(others) - now + 0.01))
        self.next_claim = time.monotonic() + wait

    # --- one step -----------------------------------------------------------------------------

    async def step(self, *, replay: bool = False) -> bool:
        """Deliver one batch, and replay held streams that are due. Whether anything happened."""
        if not self.positions:
            return False
        did = await self.deliver_batch()
        if replay or time.monotonic() >= self.next_replay:
            self.next_replay = time.monotonic() + self.worker.replay_interval
            did = await self.replay_due() or did
        return did

    async def deliver_batch(self) -> bool:
        envs = await self.store.read_all(
            after=min(self.positions.values()), types=self.route.types, limit=self.worker.batch_size
        )
        if not envs:
            return False
        mine = self._mine(envs)
        last = envs[-1].global_position
        blocked_before = set(self.blocked)
        tx = Transaction()
        alerts: list[Alert] = []
        overlay: Overlay = {}
        for env, partition in mine:
            if self.route.policy.sequenced and env.stream in self.blocked:
                tx.held = grow(tx.held, self._waiting(env, partition))
                continue
            handled = await self.handle(env, 0, immediate=True, overlay=overlay)
            self._absorb(handled, env, partition, tx, alerts, overlay, [])
        moves = self._moves(last)
        tx.checkpoints = grow(tx.checkpoints, *moves)
        try:
            await self.app._commit(tx)
        except LeaseLost:
            self._lost()
            return True
        except (WrongExpectedVersion, StoreError) as exc:
            # One handler's writes cannot be committed (a concurrent append, a refused row):
            # commit message by message, so that only that message is retried.
            log.info(
                "%s: batch commit failed (%s); committing one message at a time",
                self.route.name,
                exc,
            )
            self.blocked = blocked_before
            await self._one_by_one(mine, last)
            return True
        self._moved(moves)
        await self._fire(alerts)
        return True

    def _mine(self, envs: Sequence[Envelope]) -> list[tuple[Envelope, int]]:
        parts = self.route.partitions
        positions = self.positions
        known = self._partition_of
        if len(known) > 100_000:
            known.clear()
        mine = []
        for env in envs:
            partition = known.get(env.stream)
            if partition is None:
                partition = known[env.stream] = partition_of(env.stream, parts)
            position = positions.get(partition)
            if position is not None and env.global_position > position:
                mine.append((env, partition))
        return mine

    def _moves(self, last: int) -> list[CheckpointMove]:
        return [
            CheckpointMove(self.route.name, p, self.worker.id, pos, last)
            for p, pos in self.positions.items()
            if pos < last
        ]

    def _moved(self, moves: Sequence[CheckpointMove]) -> None:
        for move in moves:
            self.positions[move.partition] = move.position

    def _lost(self) -> None:
        log.warning("%s: lease lost; another worker has taken over", self.route.name)
        self.positions = {}
        self.next_claim = 0.0

    async def _one_by_one(self, mine: Sequence[tuple[Envelope, int]], last: int) -> None:
        for env, partition in mine:
            if partition not in self.positions:
                return
            attempts = 0
            while True:
                tx = Transaction()
                alerts: list[Alert] = []
                if self.route.policy.sequenced and env.stream in self.blocked:
                    tx.held = grow(tx.held, self._waiting(env, partition))
                    handled = None
                else:
                    handled = await self.handle(env, attempts, immediate=True, overlay=None)
                    self._absorb(handled, env, partition, tx, alerts, None, [])
                move = CheckpointMove(
                    self.route.name,
                    partition,
                    self.worker.id,
                    self.positions[partition],
                    env.global_position,
                )
                tx.checkpoints = grow(tx.checkpoints, move)
                try:
                    await self.app._commit(tx)
                except LeaseLost:
                    self._lost()
                    return
                except WrongExpectedVersion as exc:
                    assert handled is not None
                    attempts = handled.attempts
                    if not self.route.policy.gives_up(attempts, exc):
                        continue
                    failed = self._failure(attempts, exc, "", [], final=True)
                    tx = Transaction(checkpoints=[move])
                    self._absorb(failed, env, partition, tx, alerts, None, [])
                    if not await self._commit_or_lose(tx):
                        return
                self._moved([move])
                await self._fire(alerts)
                break
        moves = self._moves(last)
        if moves and await self._commit_or_lose(Transaction(checkpoints=moves)):
            self._moved(moves)

    async def _commit_or_lose(self, tx: Transaction) -> bool:
        try:
            await self.app._commit(tx)
        except LeaseLost:
            self._lost()
            return False
        return True

    # --- held messages ------------------------------------------------------------------------

    async def replay_due(self) -> bool:
        sequenced = self.route.policy.sequenced
        streams = await self.store.due_streams(
            self.route.name, list(self.positions), sequenced=sequenced
        )
        now = await self.store.now() if streams and not sequenced else 0.0
        for stream in streams:
            await self._replay(stream, sequenced, now)
        return bool(streams)

    async def _replay(self, stream: str, sequenced: bool, now: float) -> None:
        """Handle a stream's held messages again: in order, stopping at the first that fails
        (sequenced); or each that is due on its own (park and move on)."""
        rows = await self.store.held(subscription=self.route.name, stream=stream)
        for index, row in enumerate(rows):
            if row.partition not in self.positions:
                return
            if not sequenced:
                if not (
                    row.status == REPLAY or (row.status == RETRYING and (row.due_at or 0) <= now)
                ):
                    continue
            elif index == 0 and row.status == DEAD:
                return
            found = await self.store.read_all(after=row.global_position - 1, limit=1)
            if not found or found[0].global_position != row.global_position:
                log.error(
                    "%s: held message at %d is missing from the log",
                    self.route.name,
                    row.global_position,
                )
                return
            env = found[0]
            if row.status in (WAITING, REPLAY):
                # A message's first turn, or an operator's retry after a repair: the whole retry
                # policy from the start (its earlier attempts stay in the history).
                handled = await self.handle(env, 0, immediate=True, overlay=None)
            else:
                handled = await self.handle(env, row.attempts, immediate=False, overlay=None)
            tx = Transaction()
            alerts: list[Alert] = []
            position = self.positions[row.partition]
            tx.checkpoints = grow(
                tx.checkpoints,
                CheckpointMove(self.route.name, row.partition, self.worker.id, position, position),
            )
            self._absorb(handled, env, row.partition, tx, alerts, None, row.history)
            if handled.ok or handled.refused is not None:
                tx.unheld = grow(tx.unheld, HeldDelete(self.route.name, row.global_position))
                if sequenced:
                    # The next in line becomes due in the same transaction: if this worker stops
                    # here, whoever takes the partition over carries on from it.
                    tx.held = grow(tx.held, *_next_in_line(rows, index))
            try:
                await self.app._commit(tx)
            except LeaseLost:
                self._lost()
                return
            except WrongExpectedVersion as exc:
                failed = self._failure(handled.attempts, exc, "", [], final=False)
                failed.final = self.route.policy.gives_up(handled.attempts, exc)
                if not failed.final:
                    failed.due_in = self.route.policy.delay(handled.attempts, self.worker.rng)
                tx = Transaction(checkpoints=tx.checkpoints)
                alerts = []
                self._absorb(failed, env, row.partition, tx, alerts, None, row.history)
                if not await self._commit_or_lose(tx):
                    return
                await self._fire(alerts)
                if sequenced:
                    return
                continue
            await self._fire(alerts)
            if sequenced and not (handled.ok or handled.refused is not None):
                return
        self.blocked.discard(stream)

    def _waiting(self, env: Envelope, partition: int) -> Held:
        return Held(
            self.route.name, partition, env.stream, env.global_position, env.id, env.type, WAITING
        )

    # --- running the handler ------------------------------------------------------------------

    async def handle(
        self, env: Envelope, attempts: int, *, immediate: bool, overlay: Overlay | None
    ) -> Handled:
        route = self.route
        history: list[Attempt] = []
        try:
            message = self.app.registry.decode(env)
            headers = env.headers
        except MessageDecodeError as exc:
            # A message that cannot be decoded will not decode on a retry either: park it now,
            # with the decode error as its cause. Deploying the class and retrying releases it.
            return self._failure(attempts + 1, exc, traceback.format_exc(), history, final=True)
        attempt = attempts
        while True:
            attempt += 1
            ctx = Context(
                self.app,
                message_id=env.id,
                correlation_id=env.correlation_id or env.id,
                causation_id=env.causation_id,
                headers=headers,
                stream=env.stream,
                attempt=attempt,
                _overlay=overlay,
            )
            error: Exception
            try:
                result = route.fn(message, ctx)
                if route.is_async or (route.is_async is None and type(result) is Coroutine):
                    result = await result
            except Refused as refused:
                if route.command is not None:
                    return Handled(attempt, refused=refused)
                error = ConfigurationError(
                    f"subscriber {route.name!r} raised Refused({refused.reason!r}): an event is a fact "
                    "and cannot be refused; raise an ordinary exception to have it retried, or make "
                    "the message a command"
                )
                tb = traceback.format_exc()
            except Exception as exc:
                error = exc
                tb = traceback.format_exc()
            else:
                encoded = None
                if route.command is not None and result is not None:
                    try:
                        encoded = _encoder.encode(result)
                    except (TypeError, msgspec.EncodeError) as exc:
                        error = exc
                        tb = f"the result of {route.command.name} ({type(result).__name__}) is not JSON: {exc}"
                        return self._failure(attempt, error, tb, history, final=True)
                return Handled(attempt, ok=True, tx=ctx._tx, result=encoded)  # None: wrote nothing
            history.append(Attempt(time.time(), _describe(error)))
            if route.policy.gives_up(attempt, error):
                return self._failure(attempt, error, tb, history, final=True)
            if immediate and route.policy.retries_now(attempt):
                continue
            failed = self._failure(attempt, error, tb, history, final=False)
            failed.due_in = route.policy.delay(attempt, self.worker.rng)
            return failed

    @staticmethod
    def _failure(
        attempts: int, error: BaseException, tb: str, history: list[Attempt], *, final: bool
    ) -> Handled:
        text = _describe(error)
        if not history or history[-1].error != text:
            history = [*history, Attempt(time.time(), text)]
        return Handled(attempts, error=text, traceback=tb, final=final, history=history)

    def _absorb(
        self,
        handled: Handled,
        env: Envelope,
        partition: int,
        tx: Transaction,
        alerts: list[Alert],
        overlay: Overlay | None,
        history: list[Attempt],
    ) -> None:
        """Add what a handled message leaves behind to ``tx``; alerts to fire after the commit."""
        route = self.route
        command = route.command
        if handled.ok:
            if handled.tx is not None:
                tx.extend(handled.tx)
            if overlay is not None and handled.tx is not None:
                for doc in handled.tx.documents:
                    overlay[(doc.collection, doc.key)] = doc.data
            if command is not None:
                tx.outcomes = grow(
                    tx.outcomes,
                    Outcome(env.id, env.type, SUCCEEDED, handled.result, attempts=handled.attempts),
                )
            return
        if handled.refused is not None:
            tx.outcomes = grow(
                tx.outcomes,
                Outcome(
                    env.id,
                    env.type,
                    REFUSED,
                    reason=handled.refused.reason,
                    code=handled.refused.code,
                    attempts=handled.attempts,
                ),
            )
            return
        now = time.time()
        tx.held = grow(
            tx.held,
            Held(
                route.name,
                partition,
                env.stream,
                env.global_position,
                env.id,
                env.type,
                DEAD if handled.final else RETRYING,
                handled.attempts,
                handled.error,
                handled.traceback,
                [*history, *handled.history][-_HISTORY:],
                due_in=handled.due_in,
                first_failed_at=now,
                last_failed_at=now,
            ),
        )
        if route.policy.sequenced:
            self.blocked.add(env.stream)
        if command is not None:
            status = DEAD if handled.final else FAILED
            tx.outcomes = grow(
                tx.outcomes,
                Outcome(env.id, env.type, status, error=handled.error, attempts=handled.attempts),
            )
            if handled.final:
                failed = CommandFailed(
                    command_id=env.id,
                    command_type=env.type,
                    stream=env.stream,
                    error=handled.error,
                    attempts=handled.attempts,
                )
                new = self.app._new_message(
                    failed, correlation_id=env.correlation_id or env.id, causation_id=env.id
                )
                tx.appends.append(AppendOp(f"{env.stream}.failed", [new], ANY))
        if handled.final:
            kind = "command-dead" if command is not None else "message-parked"
            alerts.append(
                Alert(
                    kind,
                    route.name,
                    env.id,
                    env.type,
                    env.stream,
                    handled.error,
                    handled.attempts,
                    now,
                )
            )

    async def _fire(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            await self.app.alerts.fire(alert)


def _next_in_line(rows: Sequence[Held], index: int) -> list[Held]:
    """The waiting message after ``rows[index]``, marked for replay (none if there is none)."""
    after = rows[index + 1 : index + 2]
    return [
        msgspec.structs.replace(h, status=REPLAY, due_in=None) for h in after if h.status == WAITING
    ]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
