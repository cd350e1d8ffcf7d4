"""The repository: streams and documents read for the application, and streams folded into states."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

import msgspec

from tidings.errors import DocumentDecodeError
from tidings.messages import Envelope, Message, TypeRegistry
from tidings.records import Document
from tidings.store import Store

S = TypeVar("S")
T = TypeVar("T")

#: How many messages one read of a stream being folded takes.
_PAGE = 1000


def initial_state(initial: S | Callable[[], S]) -> S:
    """The state ``initial`` gives: itself, or what it makes when it is a function."""
    return initial() if callable(initial) else initial


class Repository:
    """Reads through ``store``, decoding messages with ``registry``."""

    def __init__(self, store: Store, registry: TypeRegistry) -> None:
        self.store = store
        self.registry = registry

    def decode(self, envelope: Envelope) -> Envelope:
        """The envelope with its ``message`` decoded (raises ``MessageDecodeError``)."""
        if envelope.message is not None:
            return envelope
        return msgspec.structs.replace(envelope, message=self.registry.decode(envelope))

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """A stream's messages, decoded, forwards (default) or backwards."""
        found = await self.store.read_stream(
            stream, from_position=from_position, backwards=backwards, limit=limit
        )
        return [self.decode(env) for env in found]

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[type[Message] | str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        """Messages in global order after a global position, decoded, optionally only of ``types``."""
        names = None
        if types is not None:
            names = [t if isinstance(t, str) else t.__type_name__ for t in types]
        found = await self.store.read_all(after=after, types=names, limit=limit)
        return [self.decode(env) for env in found]

    async def load(
        self, stream: str, evolve: Callable[[S, Any], S], initial: S | Callable[[], S]
    ) -> tuple[S, int]:
        """Fold a stream's events with ``evolve`` from ``initial``: ``(state, version)``."""
        return await self.fold(stream, evolve, initial_state(initial), 0)

    async def fold(
        self, stream: str, evolve: Callable[[S, Any], S], state: S, version: int
    ) -> tuple[S, int]:
        """Fold the stream's events after ``version`` into ``state``: ``(state, version)``.

        Commands sent into the stream are intentions, not state: only events are folded."""
        while True:
            found = await self.store.read_stream(stream, from_position=version + 1, limit=_PAGE)
            for env in found:
                if env.kind == "event":
                    state = evolve(state, self.registry.decode(env))
                version = env.stream_position
            if len(found) < _PAGE:
                return state, version

    @overload
    async def get(self, collection: str, key: str) -> Any: ...

    @overload
    async def get(self, collection: str, key: str, type: type[T]) -> T | None: ...

    async def get(self, collection: str, key: str, type: Any = Any) -> Any:
        """A document written through ``ctx.put`` (``None`` if there is none)."""
        data = await self.store.get_document(collection, key)
        return None if data is None else decode_document(collection, key, data, type)

    async def document(self, collection: str, key: str) -> Document:
        """A document's JSON, undecoded, with its version."""
        return await self.store.document(collection, key)

    async def documents(self, collection: str, *, limit: int = 1000) -> dict[str, Any]:
        """A collection's documents by key."""
        found = await self.store.documents(collection, limit=limit)
        return {key: decode_document(collection, key, data) for key, data in found}


def decode_document(collection: str, key: str, data: bytes, type: Any = Any) -> Any:
    """A stored document's JSON as ``type``; ``DocumentDecodeError`` names the collection and key
    of one that does not decode."""
    try:
        return msgspec.json.decode(data, type=type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        wanted = "" if type is Any else f" as {getattr(type, '__name__', type)}"
        raise DocumentDecodeError(collection, key, f"{exc}{wanted}") from exc
