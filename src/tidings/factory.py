"""The message factory: turns commands and events into the ``NewMessage``s a store appends."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tidings.delivery.observer import Observer
from tidings.ids import uuid7
from tidings.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Command,
    Event,
    Message,
    MessageCodec,
    NewMessage,
    TypeRegistry,
    encode_headers,
    internal_stream,
    validate_message_id,
    validate_stream,
)
from tidings.records import ANY


class MessageFactory:
    """Gives a message its id, kind, type name, version and JSON payload (checked against its
    class, within ``max_message_bytes``), and its correlation and causation.

    It registers every message class it meets with ``registry`` (for decoding), and remembers
    which command types were sent, so that ``App.validate`` can find those without a handler.
    """

    def __init__(
        self, registry: TypeRegistry, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        self.registry = registry
        self.max_message_bytes = max_message_bytes
        #: the codec of each class met
        self._codecs: dict[type[Message], MessageCodec] = {}
        self._sent: set[type[Command]] = set()
        #: stamps each new message's headers (the trace context); None when nobody watches
        self.observer: Observer | None = None

    def register(self, *classes: type[Message]) -> None:
        """Make message classes known (for decoding, validation and the advisor)."""
        for cls in classes:
            self._codecs[cls] = self.registry.codec(cls)

    def known(self) -> set[type[Message]]:
        """Every message class met: registered, handled, recorded or sent."""
        return self._codecs.keys() | self._sent

    def validate(self, message: Message) -> None:
        """Raise ``MessageValidationError`` unless every field of ``message`` has a value of its
        declared type (for a message that is handled but not stored: an invoked command)."""
        (self._codecs.get(type(message)) or self._codec(message)).encode(message)

    def _codec(self, message: Message) -> MessageCodec:
        """The codec of a class not met before."""
        self.register(type(message))
        return self._codecs[type(message)]

    def new(
        self,
        message: Message,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: dict[str, str] | None = None,
        id: str | None = None,
    ) -> NewMessage:
        """``message`` encoded, with ``id`` (validated) or a new UUIDv7; a message without a
        correlation id starts its own correlation. Raises ``MessageValidationError`` when a
        field's value does not match its declared type."""
        codec = self._codecs.get(type(message)) or self._codec(message)
        message_id = uuid7() if id is None else validate_message_id(id)
        if self.observer is not None:
            headers = self.observer.stamp(headers)
        return NewMessage(
            message_id,
            codec.kind,
            codec.type_name,
            codec.version,
            codec.encode(message, self.max_message_bytes),
            correlation_id or message_id,
            causation_id,
            None if headers is None else encode_headers(headers),
        )

    def events(
        self,
        events: Iterable[Event],
        correlation_id: str | None,
        causation_id: str | None,
        *,
        ids: Sequence[str] | None = None,
        via: str = "ctx",
    ) -> list[NewMessage]:
        """``events`` encoded for one append, named by ``ids`` when given (``via`` names the
        caller in the error for a message that is not an event)."""
        events = list(events)
        if ids is not None and len(ids) != len(events):
            raise ValueError(f"{via}.append: {len(ids)} ids for {len(events)} events")
        new = []
        for n, event in enumerate(events):
            if not isinstance(event, Event):
                raise TypeError(
                    f"{via}.append takes events, got {type(event).__name__}: send commands with "
                    f"{via}.send"
                )
            new.append(
                self.new(
                    event,
                    correlation_id=correlation_id,
                    causation_id=causation_id,
                    id=None if ids is None else ids[n],
                )
            )
        return new

    def to_send(
        self,
        command: Command,
        stream: str | None,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        headers: dict[str, str] | None = None,
        id: str | None = None,
    ) -> tuple[NewMessage, str, int]:
        """A command to send: its message, the stream it goes to and the version expected there.

        Without a ``stream`` the command is a stream of its own, named by its id and so new:
        sent commands run in parallel unless the sender names a stream to order them by.
        """
        new = self.new(
            command,
            correlation_id=correlation_id,
            causation_id=causation_id,
            headers=headers,
            id=id,
        )
        self._sent.add(type(command))
        if stream is None:
            return new, self.command_stream(new), 0
        return new, validate_stream(stream), ANY

    @staticmethod
    def command_stream(command: NewMessage) -> str:
        """The stream of its own a command is sent to when the sender names none (reserved:
        ``$cmd-<type>-<id>``)."""
        return internal_stream(f"cmd-{command.type}-{command.id}")
