"""Messages: the ``Command`` and ``Event`` bases, the ``Envelope`` they travel in, and the codec.

A message class is a frozen msgspec Struct. Its stable *type name* (what is stored) is
the class name unless the class says otherwise (``class X(Event, type_name="shop.X")``); its schema
version is ``version=`` (default 1). Payloads are JSON, never pickle. Stored payloads of an older version are brought up to
date by upcasters registered on the :class:`TypeRegistry`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import msgspec

from tidings.errors import (
    ConfigurationError,
    InvalidName,
    MessageDecodeError,
    MessageTooLarge,
    MessageValidationError,
    ReservedName,
    UnknownMessageType,
)

Kind = Literal["command", "event"]

#: The default largest encoded payload a message may have (1 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


# --- names -----------------------------------------------------------------------------------

_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,199}")
_SUBSCRIPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:\-]{0,99}")
MAX_STREAM_LENGTH = 256


def validate_type_name(name: str) -> str:
    """Check a message type name: letters, digits, ``_ . : -``, at most 200 characters."""
    if not isinstance(name, str) or not _TYPE_NAME.fullmatch(name):
        raise InvalidName(
            f"message type name {name!r} is not allowed: use letters, digits and _ . : - "
            "(starting with a letter or _), at most 200 characters"
        )
    return name


def validate_subscription_name(name: str) -> str:
    """Check a subscription name: a letter, then letters, digits, ``_ . : -``; at most 100 characters."""
    if not isinstance(name, str) or not _SUBSCRIPTION_NAME.fullmatch(name):
        raise InvalidName(
            f"subscription name {name!r} is not allowed: start with a letter, then letters, "
            "digits and _ . : -, at most 100 characters"
        )
    return name


MAX_ID_LENGTH = 100


def validate_message_id(message_id: str) -> str:
    """Check a message id chosen by the caller: 1 to 100 printable characters, no spaces."""
    if (
        not isinstance(message_id, str)
        or not message_id
        or len(message_id) > MAX_ID_LENGTH
        or not message_id.isprintable()
        or " " in message_id
    ):
        raise InvalidName(
            f"message id {message_id!r} is not allowed: use 1 to {MAX_ID_LENGTH} printable "
            "characters without spaces, for example tidings.uuid7() or an order number"
        )
    return message_id


#: The framework's own streams (workflow instances, sent commands' own streams, ...) start with
#: this, KurrentDB's ``$`` streams being the model: user code reads them but never writes there.
RESERVED_PREFIX = "$"


class InternalStream(str):
    """A reserved stream name that :func:`validate_stream` lets pass: how the framework writes
    to its own streams through a ``Context`` (names given out, such as ``Ticket.stream``, are
    plain strings)."""

    __slots__ = ()


def internal_stream(name: str) -> str:
    """``name`` in the reserved namespace: ``internal_stream("wf-payment-o1") == "$wf-payment-o1"``."""
    return RESERVED_PREFIX + name


def is_internal(stream: str) -> bool:
    """Whether ``stream`` is one of the framework's own."""
    return stream.startswith(RESERVED_PREFIX)


def validate_stream(stream: str) -> str:
    """Check a stream name: 1 to 256 printable characters, not in the reserved namespace unless
    the framework writes there (:class:`InternalStream`)."""
    if (
        not isinstance(stream, str)
        or not stream
        or len(stream) > MAX_STREAM_LENGTH
        or not stream.isprintable()
    ):
        raise InvalidName(
            f"stream name {stream!r} is not allowed: use 1 to {MAX_STREAM_LENGTH} printable "
            "characters, for example 'screening-42'"
        )
    if stream.startswith(RESERVED_PREFIX):
        if isinstance(stream, InternalStream):
            return str(stream)
        raise ReservedName(
            f"stream name {stream!r} is reserved: names starting with {RESERVED_PREFIX!r} are "
            "tidings' own streams (workflow instances, sent commands, failures); read them, but "
            "publish, send and append to a stream of your own, e.g. 'payment-o1'"
        )
    return stream


class _MessageMeta(msgspec.StructMeta):
    """Makes every message class frozen (fields by position, a base's first, or by name; a class
    says ``kw_only=True`` for keyword-only fields), and takes ``type_name=`` and ``version=``
    as class keywords: ``class SeatReserved(Event, type_name="cinema.SeatReserved", version=2)``."""

    def __new__(
        mcls,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        type_name: str | None = None,
        version: int | None = None,
        **kwargs: Any,
    ) -> _MessageMeta:
        if type_name is not None:
            namespace["__type_name__"] = type_name
        if version is not None:
            namespace["__version__"] = version
        kwargs.setdefault("frozen", True)
        try:
            return super().__new__(mcls, name, bases, namespace, **kwargs)
        except TypeError as exc:
            if "cannot follow optional fields" not in str(exc):
                raise
            declared = ", ".join(base.__name__ for base in bases)
            raise ConfigurationError(
                f"message class {name}: {exc} Its base's fields come first, so to keep them "
                f"positional declare class {name}({declared}, kw_only=True)"
            ) from None


class Message(msgspec.Struct, metaclass=_MessageMeta):
    """Base of every message. Subclass :class:`Command` or :class:`Event`, not this."""

    __type_name__: ClassVar[str] = ""
    __version__: ClassVar[int] = 1
    __kind__: ClassVar[Kind]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__type_name__" not in cls.__dict__:
            cls.__type_name__ = cls.__name__
        validate_type_name(cls.__type_name__)
        if not isinstance(cls.__version__, int) or cls.__version__ < 1:
            raise ConfigurationError(f"{cls.__name__}.__version__ must be an int >= 1")


class Command(Message):
    """An intention with exactly one recipient, who may refuse it. Name it in the imperative."""

    __kind__: ClassVar[Kind] = "command"


class Event(Message):
    """A fact that already happened, broadcast to every subscriber. Name it in the past tense."""

    __kind__: ClassVar[Kind] = "event"


def asdict(message: Message) -> dict[str, Any]:
    """A message's fields by name, to build another message from it: ``Allocate(**asdict(event))``
    (``dataclasses.asdict`` does not take messages). Shallow: a nested struct stays a struct."""
    return msgspec.structs.asdict(message)


class NewMessage(msgspec.Struct, frozen=True, gc=False):
    """A message on its way into the log: encoded, not yet positioned."""

    id: str
    kind: str
    type: str
    version: int
    data: bytes
    correlation_id: str | None = None
    causation_id: str | None = None
    headers: bytes | None = None


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """A message as recorded in the log, with where and when it was recorded.

    ``data`` is the stored JSON payload. ``message`` is the decoded message when the envelope was
    read through an :class:`~tidings.App` (the store alone returns it undecoded).
    """

    id: str
    kind: str
    type: str
    version: int
    stream: str
    stream_position: int
    global_position: int
    recorded_at: float
    data: bytes
    correlation_id: str | None = None
    causation_id: str | None = None
    headers_json: bytes | None = None
    message: Any = None

    @property
    def recorded_datetime(self) -> datetime:
        """``recorded_at`` as an aware UTC datetime."""

        return datetime.fromtimestamp(self.recorded_at, tz=UTC)

    @property
    def headers(self) -> dict[str, str]:
        """The envelope's headers (trace context, user headers)."""
        if not self.headers_json:
            return {}
        try:
            return msgspec.json.decode(self.headers_json, type=dict[str, str])
        except msgspec.DecodeError as exc:
            raise MessageDecodeError(
                f"headers are not valid JSON ({exc})",
                type_name=self.type,
                stream=self.stream,
                position=self.stream_position,
            ) from exc


# --- the codec and the registry --------------------------------------------------------------

_encoder = msgspec.json.Encoder()
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class MessageCodec:
    """One message class's payloads: encoded as JSON, and checked against the class on the way in.

    A payload is checked by decoding it back into its class, so a message that is stored is one
    that can be read: a value of the wrong type (``qty="two"`` for an ``int``, ``None`` for a
    ``str``) is refused with msgspec's words for what was expected and where."""

    __slots__ = ("cls", "decode", "kind", "type_name", "version")

    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls
        self.kind: str = cls.__kind__
        self.type_name = cls.__type_name__
        self.version = cls.__version__
        #: a payload of this class's version, decoded (raises ``msgspec.ValidationError``)
        self.decode: Callable[[bytes], Any] = msgspec.json.Decoder(cls).decode

    def encode(self, message: Message, max_bytes: int | None = None) -> bytes:
        """``message``'s JSON payload. Raises ``MessageValidationError`` when a field's value does
        not match its declared type, ``MessageTooLarge`` when the payload is over ``max_bytes``."""
        try:
            data = _encoder.encode(message)
            self.decode(data)
        except msgspec.ValidationError as exc:
            path = str(exc).partition(" - at ")[2].strip("`")
            raise MessageValidationError(self._name(), str(exc), path or None) from None
        except (TypeError, msgspec.EncodeError) as exc:
            raise self._unencodable(message, exc) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise MessageTooLarge(
                f"{self.type_name} encodes to {len(data)} bytes, over the limit of "
                f"{max_bytes}: store large content elsewhere and put a reference in the message, "
                "or raise the App's max_message_bytes"
            )
        return data

    def _name(self) -> str:
        name = self.cls.__qualname__
        return name if name == self.type_name else f"{name} (type {self.type_name!r})"

    def _unencodable(self, message: Message, exc: Exception) -> MessageValidationError:
        """The error for a message with a value JSON cannot hold, naming the first such field."""
        for field in msgspec.structs.fields(self.cls):
            try:
                _encoder.encode(getattr(message, field.name))
            except (TypeError, msgspec.EncodeError):
                expected = getattr(field.type, "__name__", None) or repr(field.type)
                path = f"$.{field.encode_name}"
                return MessageValidationError(
                    self._name(), f"Expected `{expected}`, {exc} - at `{path}`", path
                )
        return MessageValidationError(self._name(), str(exc))


def encode_headers(headers: dict[str, str] | None) -> bytes | None:
    """Encode headers for an envelope (``None`` when there are none)."""
    return _encoder.encode(headers) if headers else None


def _all_message_classes() -> Iterable[type[Message]]:
    pending: list[type[Message]] = [Command, Event]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            yield sub


class TypeRegistry:
    """Maps stored type names to message classes, and upgrades old payloads with upcasters.

    Classes are registered by the App as it meets them (handlers, publish, send, append, or
    ``App(messages=[...])``). A stored type that was never registered is looked up among the
    loaded subclasses of ``Command`` and ``Event`` by its type name.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[Message]] = {}
        self._codecs: dict[type[Message], MessageCodec] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[Message]) -> type[Message]:
        """Register a message class under its type name."""
        if not (isinstance(cls, type) and issubclass(cls, (Command, Event))):
            raise TypeError(f"{cls!r} is not a Command or Event subclass")
        name = cls.__type_name__
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ConfigurationError(
                f"two message classes share the type name {name!r}: {known.__module__}."
                f"{known.__qualname__} and {cls.__module__}.{cls.__qualname__}; give one of them "
                "its own __type_name__"
            )
        self._classes[name] = cls
        return cls

    def __contains__(self, cls: object) -> bool:
        return isinstance(cls, type) and self._classes.get(getattr(cls, "__type_name__", "")) is cls

    def codec(self, cls: type[Message]) -> MessageCodec:
        """The codec of a message class, registering the class when it is new."""
        codec = self._codecs.get(cls)
        if codec is None:
            codec = self._codecs[self.register(cls)] = MessageCodec(cls)
        return codec

    def classes(self) -> list[type[Message]]:
        """The registered classes."""
        return list(self._classes.values())

    def add_upcaster(self, type_name: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` to turn a ``type_name`` payload of ``from_version`` into ``from_version + 1``."""
        key = (validate_type_name(type_name), from_version)
        if key in self._upcasters:
            raise ConfigurationError(
                f"an upcaster for {type_name!r} from version {from_version} is already registered"
            )
        self._upcasters[key] = fn

    def resolve(self, type_name: str) -> type[Message]:
        """The class for a stored type name."""
        cls = self._classes.get(type_name)
        if cls is not None:
            return cls
        found = {c for c in _all_message_classes() if c.__type_name__ == type_name}
        if len(found) == 1:
            return self.register(found.pop())
        if found:
            names = ", ".join(sorted(f"{c.__module__}.{c.__qualname__}" for c in found))
            raise UnknownMessageType(
                f"several classes are named {type_name!r} ({names}); register the right one "
                "with App(messages=[...])",
                type_name=type_name,
            )
        raise UnknownMessageType(
            "no message class has this type name; import the module that defines it, or "
            "register it with App(messages=[...])",
            type_name=type_name,
        )

    def decode(self, envelope: Envelope) -> Message:
        """Decode an envelope's payload into its message class, upcasting old versions."""
        try:
            cls = self.resolve(envelope.type)
        except UnknownMessageType as exc:
            raise UnknownMessageType(
                exc.detail,
                type_name=envelope.type,
                stream=envelope.stream,
                position=envelope.stream_position,
            ) from None
        if not isinstance(envelope.data, bytes) or not isinstance(envelope.version, int):
            raise MessageDecodeError(
                f"the stored row is damaged: data is {type(envelope.data).__name__} (want JSON bytes), "
                f"version is {envelope.version!r} (want an integer)",
                type_name=envelope.type,
                stream=envelope.stream,
                position=envelope.stream_position,
            )
        try:
            if envelope.version == cls.__version__:
                return self.codec(cls).decode(envelope.data)  # type: ignore[no-any-return]
            return self._upcast(cls, envelope)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MessageDecodeError(
                f"{exc} (payload of {len(envelope.data)} bytes, stored version {envelope.version})",
                type_name=envelope.type,
                stream=envelope.stream,
                position=envelope.stream_position,
            ) from exc

    def _upcast(self, cls: type[Message], envelope: Envelope) -> Message:
        def fail(detail: str) -> MessageDecodeError:
            return MessageDecodeError(
                detail,
                type_name=envelope.type,
                stream=envelope.stream,
                position=envelope.stream_position,
            )

        if envelope.version > cls.__version__:
            raise fail(
                f"stored version {envelope.version} is newer than the code's version "
                f"{cls.__version__}: deploy the newer code to read it"
            )
        data = msgspec.json.decode(envelope.data)
        if not isinstance(data, dict):
            raise fail("payload is not a JSON object")
        for version in range(envelope.version, cls.__version__):
            upcaster = self._upcasters.get((envelope.type, version))
            if upcaster is None:
                raise fail(
                    f"no upcaster from version {version} to {version + 1}; register one with "
                    f"@app.upcaster({envelope.type!r}, from_version={version})"
                )
            try:
                data = upcaster(data)
            except Exception as exc:
                raise fail(f"upcaster from version {version} failed: {exc!r}") from exc
        return msgspec.convert(data, cls)


class CommandFailed(Event, type_name="tidings.CommandFailed"):
    """A sent command was given up on (dead): subscribe to it to learn, not guess.

    Recorded in the stream ``$failed-<the command's stream>`` (:func:`failed_stream`: kept apart
    from the command's own stream, which may be an aggregate's), in the transaction that parks
    the command."""

    command_id: str
    command_type: str
    stream: str
    error: str
    attempts: int


def failed_stream(stream: str) -> str:
    """Where the ``CommandFailed`` of a command recorded in ``stream`` is recorded."""
    return internal_stream(f"failed-{stream}")
