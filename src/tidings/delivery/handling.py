"""Handling one message: its handler run under the retry policy, and what that leaves in a batch."""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidings.context import Context, Overlay, Services
from tidings.delivery.alerts import Alert
from tidings.delivery.observer import Observer
from tidings.delivery.policy import RetryPolicy
from tidings.delivery.replies import reply
from tidings.errors import (
    ConfigurationError,
    MessageDecodeError,
    Refused,
    StoreClosed,
    StoreUnavailable,
    UnknownMessageType,
)
from tidings.messages import CommandFailed, Envelope, failed_stream
from tidings.records import (
    ANY,
    DEAD,
    FAILED,
    REFUSED,
    RETRYING,
    SUCCEEDED,
    WAITING,
    AppendOp,
    Attempt,
    DocumentWrite,
    Held,
    Outcome,
    Transaction,
)
from tidings.registry import CommandHandler, Subscriber

log = logging.getLogger("tidings.worker")
_encoder = msgspec.json.Encoder()
#: The store itself failing: no message is to blame, so it is no attempt of one.
OUTAGE = (StoreUnavailable, StoreClosed)
#: How many failed attempts a held message keeps in its history.
_HISTORY = 50


@dataclass(frozen=True)
class Route:
    """What one subscription delivers, and to whom."""

    name: str
    types: tuple[str, ...]
    fn: Any
    is_async: bool
    policy: RetryPolicy
    start: str
    partitions: int
    #: set for the subscription of a sent-command handler
    command: CommandHandler | None = None
    #: types the subscription handled before that no class knows now (a renamed or removed
    #: class): read with ``types`` so that each is dead-lettered with its cause, not skipped
    lost: tuple[str, ...] = ()

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


def failure(
    attempts: int,
    error: BaseException,
    tb: str,
    history: list[Attempt],
    *,
    final: bool,
    due_in: float | None = None,
) -> Handled:
    """A failed handling, with ``error`` last in its history."""
    text = describe(error)
    if not history or history[-1].error != text:
        history = [*history, Attempt(time.time(), text, tb or None)]
    return Handled(attempts, error=text, traceback=tb, final=final, due_in=due_in, history=history)


def store_outage(error: BaseException) -> BaseException | None:
    """The store's own failure that ``error`` is or was raised from (``raise ... from``, or while
    handling it), or None when the store is not to blame."""
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        if isinstance(found, OUTAGE):
            return found
        seen.add(id(found))
        found = found.__cause__ or (None if found.__suppress_context__ else found.__context__)
    return None


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Handling:
    """Runs one route's handler on a message, retrying under the route's policy."""

    def __init__(
        self,
        route: Route,
        services: Services,
        rng: random.Random,
        observer: Observer | None = None,
    ) -> None:
        self.route = route
        self.services = services
        self.rng = rng
        self.observer = observer
        #: the types its handler takes (a held message of another type is not given to it)
        self.accepts = frozenset(route.types) - frozenset(route.lost)

    async def handle(
        self, env: Envelope, attempts: int, *, immediate: bool, overlay: Overlay | None
    ) -> Handled:
        """Handle ``env`` after ``attempts`` earlier attempts; with ``immediate``, retry at once
        as often as the policy allows. A failure of the store itself (:data:`OUTAGE`, also as
        the cause of what the handler raised) is raised, as ``StoreUnavailable`` unless it is
        one of those: it is no attempt of the message."""
        if self.observer is None:
            return await self._handle(env, attempts, immediate, overlay)
        return await self.observer.handling(
            self.route, env, attempts, lambda: self._handle(env, attempts, immediate, overlay)
        )

    async def _handle(
        self, env: Envelope, attempts: int, immediate: bool, overlay: Overlay | None
    ) -> Handled:
        route, services = self.route, self.services
        history: list[Attempt] = []
        try:
            message = services.factory.registry.decode(env)
            headers = env.headers
        except MessageDecodeError as exc:
            # It will not decode on a retry either: park it now, with the decode error as its
            # cause. Deploying the class and retrying releases it.
            error: Exception = exc
            if env.type in route.lost:
                error = UnknownMessageType(
                    f"subscription {route.name!r} handled {env.type!r} before, and no class has "
                    "this type name now: if its class was renamed, keep the stored name "
                    f"(class NewName(Event, type_name={env.type!r})), then retry; or skip it",
                    type_name=env.type,
                    stream=env.stream,
                    position=env.stream_position,
                )
            return failure(attempts + 1, error, traceback.format_exc(), history, final=True)
        if env.type not in self.accepts:
            unwanted = ConfigurationError(
                f"subscription {route.name!r} does not handle {env.type!r} any more; skip it "
                "(`tidings dlq skip`), or take the type in the handler again and retry"
            )
            return failure(attempts + 1, unwanted, "", history, final=True)
        attempt = attempts
        while True:
            attempt += 1
            ctx = Context(
                services.factory,
                services.reader,
                env.id,
                env.correlation_id or env.id,
                env.causation_id,
                headers,
                env.stream,
                attempt,
                overlay,
            )
            try:
                result = route.fn(message, ctx)
                if route.is_async:
                    result = await result
            except Refused as refused:
                if route.command is not None:
                    try:
                        tx = route.command.refusal(ctx, refused)
                    except Exception as exc:  # what it records is not events: no retry helps
                        return failure(attempt, exc, traceback.format_exc(), history, final=True)
                    return Handled(attempt, tx=tx, refused=refused)
                error = ConfigurationError(
                    f"subscriber {route.name!r} raised Refused({refused.reason!r}): an event is a fact "
                    "and cannot be refused; raise an ordinary exception to have it retried, or make "
                    "the message a command"
                )
                tb = traceback.format_exc()
            except Exception as exc:
                outage = store_outage(exc)
                if outage is not None:
                    log.warning(
                        "%s: the handler of %s %s (stream %r) failed because the store is "
                        "unavailable (%s); not counted as an attempt: the subscription pauses "
                        "until the store is back",
                        route.name,
                        env.type,
                        env.id,
                        env.stream,
                        describe(outage),
                    )
                    if outage is exc:
                        raise
                    raise StoreUnavailable(
                        f"the handler raised {describe(exc)}, caused by the store: {describe(outage)}"
                    ) from exc
                error = exc
                tb = traceback.format_exc()
            else:
                encoded = None
                if route.command is not None and result is not None:
                    try:
                        encoded = _encoder.encode(result)
                    except (TypeError, msgspec.EncodeError) as exc:
                        tb = f"the result of {route.command.name} ({type(result).__name__}) is not JSON: {exc}"
                        return failure(attempt, exc, tb, history, final=True)
                return Handled(attempt, ok=True, tx=ctx.writes, result=encoded)
            history.append(Attempt(time.time(), describe(error), tb))
            policy = route.policy
            if immediate and policy.retries_now(attempt) and not policy.gives_up(attempt, error):
                continue
            return self.failed(attempt, error, tb, history)

    def failed(
        self, attempt: int, error: BaseException, tb: str, history: list[Attempt]
    ) -> Handled:
        """The failure of ``attempt``: final when the policy gives up, else due after its backoff."""
        policy = self.route.policy
        if policy.gives_up(attempt, error):
            return failure(attempt, error, tb, history, final=True)
        due_in = policy.delay(attempt, self.rng)
        return failure(attempt, error, tb, history, final=False, due_in=due_in)


def pend(overlay: Overlay, documents: Sequence[DocumentWrite]) -> None:
    """Add a handler's document writes to its batch's ``overlay``, each with the version it will
    have: known when the document was read (checked) or written before in the batch."""
    known: dict[tuple[str, str], int | None] = {}
    for doc in documents:
        key = (doc.collection, doc.key)
        if doc.expected is not None:
            version: int | None = doc.expected
        elif key in known:
            version = known[key]
        else:
            pending = overlay.get(key)
            version = None if pending is None else pending[1]
        if doc.check:
            known[key] = version
        else:
            known[key] = None if version is None else version + 1
            overlay[key] = (doc.data, known[key])


class Batch:
    """What handled messages leave behind for one commit: a transaction, and the alerts to fire
    once it committed. ``blocked`` is the route's set of streams whose later messages wait;
    ``overlay`` the documents written so far, when the batch holds several messages."""

    def __init__(
        self,
        route: Route,
        services: Services,
        blocked: set[str],
        overlay: Overlay | None = None,
    ) -> None:
        self.route = route
        self.services = services
        self.blocked = blocked
        self.overlay = overlay
        self.tx = Transaction()
        self.alerts: list[Alert] = []

    def wait(self, env: Envelope, partition: int) -> None:
        """Hold ``env`` behind the held message of its stream."""
        self.tx.held.append(
            Held(
                self.route.name,
                partition,
                env.stream,
                env.global_position,
                env.id,
                env.type,
                WAITING,
            )
        )

    def outcome(self, env: Envelope, outcome: Outcome) -> None:
        """Record a sent command's outcome (and its reply, for a command from another service)."""
        self.tx.outcomes.append(outcome)
        if env.headers_json is not None:
            reply(self.tx, env, outcome)

    def add(
        self, handled: Handled, env: Envelope, partition: int, history: Sequence[Attempt] = ()
    ) -> None:
        """Add what handling ``env`` left behind: its writes, its outcome, or its held row (after
        ``history``, its earlier attempts)."""
        route, tx = self.route, self.tx
        command = route.command
        if handled.ok:
            if handled.tx is not None:
                tx.extend(handled.tx)
                if self.overlay is not None:
                    pend(self.overlay, handled.tx.documents)
            if command is not None:
                self.outcome(
                    env,
                    Outcome(env.id, env.type, SUCCEEDED, handled.result, attempts=handled.attempts),
                )
            return
        if handled.refused is not None:
            if handled.tx is not None:
                tx.extend(handled.tx)
            refusal, attributes = handled.refused.recorded()
            self.outcome(
                env,
                Outcome(
                    env.id,
                    env.type,
                    REFUSED,
                    attributes,
                    reason=handled.refused.reason,
                    code=handled.refused.code,
                    error=refusal,
                    attempts=handled.attempts,
                ),
            )
            return
        now = time.time()
        tx.held.append(
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
            )
        )
        if route.policy.sequenced:
            self.blocked.add(env.stream)
        if command is not None:
            status = DEAD if handled.final else FAILED
            self.outcome(
                env,
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
                new = self.services.factory.new(
                    failed, correlation_id=env.correlation_id or env.id, causation_id=env.id
                )
                tx.appends.append(AppendOp(failed_stream(env.stream), [new], ANY))
        if handled.final:
            kind = "command-dead" if command is not None else "message-parked"
            self.alerts.append(
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
