"""Replies: the outcome of a command that came from another service, recorded for the relay.

A command recorded by a transport's inbox names its sender in its headers
(``tidings-reply-to``). When its outcome is final, an ``OutcomeReported`` event is appended to
``$reply-<sender>`` in the same transaction as the outcome, and the relay carries it back.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tidings.messages import Envelope, Event, InternalStream, NewMessage, internal_stream
from tidings.records import FINAL, AppendOp, Outcome, Transaction

#: the header that names the service a remote command came from
REPLY_TO: Final = "tidings-reply-to"
REPLY_PREFIX: Final = internal_stream("reply-")
_encoder = msgspec.json.Encoder()


class OutcomeReported(Event, type_name="tidings.OutcomeReported"):
    """The outcome of a command another service sent (as in :class:`~tidings.records.Outcome`;
    ``result`` is the result's JSON text)."""

    command_id: str
    command_type: str
    status: str
    result: str | None = None
    reason: str | None = None
    code: str | None = None
    error: str | None = None
    attempts: int = 0

    def outcome(self) -> Outcome:
        """The outcome to record in the sender's store."""
        return Outcome(
            self.command_id,
            self.command_type,
            self.status,
            None if self.result is None else self.result.encode(),
            self.reason,
            self.code,
            self.error,
            self.attempts,
        )


def reply(tx: Transaction, env: Envelope, outcome: Outcome) -> None:
    """Append the ``OutcomeReported`` of ``outcome`` to ``tx`` when ``env`` is a command from
    another service and the outcome is final."""
    if outcome.status not in FINAL or REPLY_TO.encode() not in (env.headers_json or b""):
        return
    sender = env.headers.get(REPLY_TO)
    if not sender:
        return
    event = OutcomeReported(
        outcome.message_id,
        outcome.type,
        outcome.status,
        None if outcome.result is None else outcome.result.decode(),
        outcome.reason,
        outcome.code,
        outcome.error,
        outcome.attempts,
    )
    new = NewMessage(
        f"reply-{env.id}-{outcome.status}"[:100],
        "event",
        OutcomeReported.__type_name__,
        1,
        _encoder.encode(event),
        env.correlation_id or env.id,
        env.id,
    )
    tx.appends.append(AppendOp(InternalStream(REPLY_PREFIX + sender), [new]))
