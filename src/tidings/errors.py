"""Every error tidings raises. Each one says what happened and what to do about it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


class TidingsError(Exception):
    """Something went wrong in tidings."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(TidingsError):
    """The application is configured wrongly; the message says what to change."""


class DuplicateHandler(ConfigurationError):
    """A command type can have exactly one handler in the whole application."""


class HandlerNotFound(TidingsError):
    """No handler is registered for this command type; register one with @app.command."""


class Refused(TidingsError):
    """The recipient refused the command.

    Raise it from a command handler (or a decider's ``decide``) to refuse: nothing the handler
    did is committed and the caller receives this error with the ``reason`` and ``code``.
    Subclass it for refusals a caller tells apart (``except OutOfStock``): a sent command's
    ``ticket.result()`` raises the same class when it is loaded in the caller's process, with
    the attributes that are plain JSON values (else ``Refused`` with the reason and code).

    ``record`` are events the refusal records all the same ("out of stock" is a refusal and a
    fact): they alone are committed, atomically with a sent command's outcome. A decider appends
    them to its stream at the version it decided on; a plain handler's are appended to
    ``stream`` (at ``expected_version``, when given) or else published, each to its type's stream.
    """

    #: attributes that say what the refusal records, not what it is (never recorded with it)
    _RECORDING = frozenset(("reason", "code", "record", "stream", "expected_version"))

    def __init__(
        self,
        reason: str,
        *,
        code: str | None = None,
        record: Sequence[Any] = (),
        stream: str | None = None,
        expected_version: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.record = tuple(record)
        self.stream = stream
        self.expected_version = expected_version

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, code={self.code!r})"

    def recorded(self) -> tuple[str | None, bytes | None]:
        """How a sent command's outcome records this refusal besides its reason and code: its
        class's name (``None`` for ``Refused`` itself) and its attributes that are plain JSON
        values (``None`` when there are none)."""
        if type(self) is Refused:
            return None, None
        kept = {}
        for name, value in vars(self).items():
            if name in self._RECORDING or name.startswith("_"):
                continue
            try:
                if msgspec.json.decode(msgspec.json.encode(value)) == value:
                    kept[name] = value
            except (TypeError, msgspec.EncodeError):
                continue
        return refusal_name(type(self)), msgspec.json.encode(kept) if kept else None


def refusal_name(cls: type[Refused]) -> str:
    """The name under which a refusal's class is recorded: its module and qualified name."""
    return f"{cls.__module__}.{cls.__qualname__}"


def restore_refusal(
    reason: str, code: str | None, name: str | None, attributes: bytes | None
) -> Refused:
    """The refusal :meth:`Refused.recorded` recorded: of its class if one of that name is loaded
    (made without calling its ``__init__``), else a ``Refused`` with the reason and code."""
    found = [cls for cls in _refusal_classes() if refusal_name(cls) == name]
    if not found:
        return Refused(reason, code=code)
    refused = found[-1].__new__(found[-1])
    Refused.__init__(refused, reason, code=code)
    if attributes:
        vars(refused).update(msgspec.json.decode(attributes))
    return refused


def _refusal_classes() -> list[type[Refused]]:
    """The loaded subclasses of ``Refused`` (a class defined again comes after the first)."""
    found: list[type[Refused]] = []
    pending = [Refused]
    while pending:
        subclasses = pending.pop(0).__subclasses__()
        found += subclasses
        pending += subclasses
    return found


class StateMutated(TidingsError):
    """A decider's ``decide`` changed the state it was given.

    ``decide`` returns events and leaves the state alone; ``evolve`` makes the next state.
    """

    def __init__(self, decide: str, command: str, stream: str | None) -> None:
        where = "" if stream is None else f" on stream {stream!r}"
        super().__init__(
            f"{decide} changed the state it was given while deciding {command}{where}: decide "
            "must only return events (evolve makes the next state); change a copy (e.g. "
            "copy.deepcopy(state), dataclasses.replace) or compute the events without changing "
            "the state"
        )
        self.decide = decide
        self.command = command
        self.stream = stream


class DeadLetterNotFound(TidingsError):
    """No held message has this id; list them with `tidings dlq list`."""


class CommandDead(TidingsError):
    """A sent command was given up on after its last attempt; it is a dead letter now."""


class WrongExpectedVersion(TidingsError):
    """A stream was not at the version the append expected (someone else wrote to it first).

    Load the stream again and decide again; a ``Decider`` command does this by itself.
    """

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream!r} is at version {actual}, the append expected {expected}: "
            "another writer got there first; load the stream again and retry"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DocumentConflict(WrongExpectedVersion):
    """A document was not at the version its handler read it at (another handler wrote it first).

    Handle the message again on fresh reads: a worker does this by itself, an invoked handler
    with ``retry_on_conflict``. ``stream`` names the document as ``collection/key``.
    """

    def __init__(self, collection: str, key: str, expected: int, actual: int) -> None:
        TidingsError.__init__(
            self,
            f"document {key!r} of collection {collection!r} is at version {actual}, the handler "
            f"read it at {expected}: another handler wrote it first; handle the message again "
            "on fresh reads",
        )
        self.stream = f"{collection}/{key}"
        self.collection = collection
        self.key = key
        self.expected = expected
        self.actual = actual


class MessageError(TidingsError):
    """A message could not be handled as given."""


class MessageDecodeError(MessageError):
    """A stored message could not be decoded into its class."""

    def __init__(
        self,
        detail: str,
        *,
        type_name: str | None = None,
        stream: str | None = None,
        position: int | None = None,
    ) -> None:
        where = []
        if type_name is not None:
            where.append(f"type {type_name!r}")
        if stream is not None:
            where.append(f"stream {stream!r}")
        if position is not None:
            where.append(f"position {position}")
        prefix = (
            f"cannot decode message ({', '.join(where)}): " if where else "cannot decode message: "
        )
        super().__init__(prefix + detail)
        self.detail = detail
        self.type_name = type_name
        self.stream = stream
        self.position = position


class UnknownMessageType(MessageDecodeError):
    """The stored type name matches no registered message class."""


class DocumentDecodeError(TidingsError):
    """A stored document could not be decoded; write it again (``ctx.put``) or delete it."""

    def __init__(self, collection: str, key: str, detail: str) -> None:
        super().__init__(
            f"cannot decode document {key!r} of collection {collection!r}: {detail}; write it "
            "again with ctx.put, or delete it with ctx.delete"
        )
        self.collection = collection
        self.key = key
        self.detail = detail


class MessageValidationError(MessageError, ValueError):
    """A message does not match its declared type; nothing of its unit of work was written."""

    def __init__(self, type_name: str, detail: str, path: str | None = None) -> None:
        super().__init__(
            f"{type_name} is not valid: {detail}. Give every field a value of its declared type "
            "(nothing was written)"
        )
        self.type_name = type_name
        self.detail = detail
        #: where in the message the bad value is, as msgspec writes it (``$.items[0].sku``)
        self.path = path


class MessageTooLarge(MessageError):
    """The encoded message is larger than the store accepts; keep large blobs elsewhere and send a reference."""


class InvalidName(TidingsError, ValueError):
    """A stream, subscription or type name is not allowed; the message says which characters are."""


class ReservedName(InvalidName):
    """This stream name is one of tidings' own (it starts with ``$``): write to a stream of your own."""


class StoreError(TidingsError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or stayed locked for too long; check that it is running and try again."""


class StoreClosed(StoreError):
    """The store was closed; open the App again (``async with app:``) before using it."""


class MissingDependency(TidingsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class LeaseLost(StoreError):
    """This worker no longer holds the partition (its lease expired and another worker took it);
    its uncommitted work is dropped and will be done by the new holder."""


class SubscriptionNotFound(TidingsError):
    """No subscription has this name; list them with `tidings subscriptions`."""


class NotCaughtUp(TidingsError, TimeoutError):
    """A subscription did not catch up with a position in time; the message says how far it got."""


class SubscriptionInUse(TidingsError):
    """A worker holds a lease on this subscription: stop the workers that run it first, or force
    the action (the workers let it go at their next lease renewal)."""


class StreamNotFound(TidingsError):
    """No message was ever recorded in this stream; list the streams with `tidings streams`."""


class BrokerError(TidingsError):
    """The message broker refused or lost a message; the relay or inbox tries again."""


class BrokerUnavailable(BrokerError):
    """The message broker cannot be reached; check that it runs at the URL given, the relay and
    inbox wait for it."""


class Unreadable(TidingsError):
    """A message from the broker is not a CloudEvent tidings can record; it is kept with its
    cause and raw bytes in the stream ``$inbox-unreadable``."""
