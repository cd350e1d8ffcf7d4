"""The storage capabilities every backend implements, and the one place store URLs are parsed.

A backend is a class implementing the ABCs below. The log is the foundation: one ordered sequence of
every message (commands and events alike), split into streams whose positions are gapless.
Everything a handler does is committed as one :class:`Transaction`, atomically.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import msgspec

from tidings.errors import ConfigurationError
from tidings.messages import Envelope, NewMessage

#: ``expected_version``: append whatever the stream's version is.
ANY: Final = -2
#: ``expected_version``: the stream must not exist yet (the same as expecting version 0).
NO_STREAM: Final = 0


class AppendOp(msgspec.Struct, frozen=True, gc=False):
    """Append ``messages`` to ``stream``; if ``expected_version`` is not ``ANY`` the stream must be at it.

    A stream's version is the position of its last message (0 for an empty stream); positions
    start at 1 and have no gaps.
    """

    stream: str
    messages: Sequence[NewMessage]
    expected_version: int = ANY


class Appended(msgspec.Struct, frozen=True, gc=False):
    """Where an append put its messages."""

    stream: str
    #: the stream's version after the append
    version: int
    #: the global position of the last message appended (or found already there)
    global_position: int


@dataclass(slots=True)
class Transaction:
    """Everything one unit of work commits at once.

    Appends are applied in order, so two appends to one stream in one transaction see each other.
    """

    appends: list[AppendOp] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.appends)


class EventLog(abc.ABC):
    """The log: append atomically, read a stream, read everything in global order."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply migrations. Called once before use."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    @abc.abstractmethod
    async def commit(self, tx: Transaction) -> list[Appended]:
        """Apply every append of ``tx`` atomically, or none.

        Raises ``WrongExpectedVersion`` when a stream is not at an append's expected version.
        A message whose id is already in the log is not appended again: an append whose
        messages are all there already succeeds without checking the expected version.
        """

    @abc.abstractmethod
    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """Messages of one stream by position, forwards from ``from_position`` (inclusive,
        default 1) or backwards from it (default: the end)."""

    @abc.abstractmethod
    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        """Messages in global order with a global position greater than ``after``,
        only of ``types`` when given."""

    @abc.abstractmethod
    async def stream_version(self, stream: str) -> int:
        """The position of the stream's last message, 0 when it has none."""

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The global position of the last message in the log, 0 when it is empty."""

    @abc.abstractmethod
    async def streams(self, *, prefix: str = "", limit: int = 100) -> list[tuple[str, int]]:
        """Stream names with their versions, by name."""


class Store(EventLog, abc.ABC):
    """A complete backend. Later capabilities (subscriptions, dead letters, outcomes, schedule,
    audit) are added to it as further ABCs."""

    url: str


def open_store(url: str) -> Store:
    """Build the store a URL names: ``memory://``, ``sqlite:///path/to/file.db`` (absolute with
    four slashes: ``sqlite:////var/lib/app.db``; ``?synchronous=normal`` trades the last commits on a
    power cut for speed)."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    if parts.scheme == "memory":
        from tidings.backends.memory import MemoryStore

        return MemoryStore()
    if parts.scheme == "sqlite":
        from tidings.backends.sqlite import SqliteStore

        path = parts.path
        if parts.netloc:
            raise ConfigurationError(
                f"store URL {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigurationError(f"store URL {url!r} names no file: use sqlite:///app.db")
        return SqliteStore(path, **options)
    raise ConfigurationError(f"unknown store URL {url!r}: use memory://, sqlite:///path.db")
