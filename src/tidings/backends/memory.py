"""The in-memory store: for unit tests and the test harness, with the same semantics as the others.

It keeps payloads encoded, exactly as a database would, so code tested against it behaves the same
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tidings.errors import StoreClosed, WrongExpectedVersion
from tidings.messages import Envelope
from tidings.store import ANY, Appended, Store, Transaction


class MemoryStore(Store):
    """A store that lives in this process's memory and is gone when it ends."""

    url = "memory://"

    def __init__(self) -> None:
        self._log: list[Envelope] = []
        self._streams: dict[str, list[Envelope]] = {}
        self._by_id: dict[str, Envelope] = {}
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    async def commit(self, tx: Transaction) -> list[Appended]:
        self._check_open()
        # Validate everything before changing anything, so a failed commit leaves no trace.
        versions: dict[str, int] = {}
        position = len(self._log)
        staged: list[Envelope] = []
        results: list[Appended] = []
        now = time.time()
        for op in tx.appends:
            fresh = [m for m in op.messages if m.id not in self._by_id]
            version = versions.get(op.stream)
            if version is None:
                version = len(self._streams.get(op.stream, ()))
            if not fresh and op.messages:
                last = self._by_id[op.messages[-1].id]
                results.append(Appended(op.stream, version, last.global_position))
                continue
            if op.expected_version != ANY and op.expected_version != version:
                raise WrongExpectedVersion(op.stream, op.expected_version, version)
            for m in fresh:
                version += 1
                position += 1
                staged.append(
                    Envelope(
                        id=m.id,
                        kind=m.kind,
                        type=m.type,
                        version=m.version,
                        stream=op.stream,
                        stream_position=version,
                        global_position=position,
                        recorded_at=now,
                        data=m.data,
                        correlation_id=m.correlation_id,
                        causation_id=m.causation_id,
                        headers_json=m.headers,
                    )
                )
            versions[op.stream] = version
            results.append(Appended(op.stream, version, position))
        for env in staged:
            self._log.append(env)
            self._streams.setdefault(env.stream, []).append(env)
            self._by_id[env.id] = env
        return results

    async def read_stream(
        self,
        stream: str,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        self._check_open()
        messages = self._streams.get(stream, [])
        if backwards:
            end = len(messages) if from_position is None else min(from_position, len(messages))
            selected = messages[:end][::-1]
        else:
            start = 1 if from_position is None else max(from_position, 1)
            selected = messages[start - 1 :]
        return selected[:limit] if limit is not None else list(selected)

    async def read_all(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[Envelope]:
        self._check_open()
        wanted = set(types) if types is not None else None
        out: list[Envelope] = []
        for env in self._log[max(after, 0) :]:
            if wanted is None or env.type in wanted:
                out.append(env)
                if len(out) >= limit:
                    break
        return out

    async def stream_version(self, stream: str) -> int:
        self._check_open()
        return len(self._streams.get(stream, ()))

    async def last_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def streams(self, *, prefix: str = "", limit: int = 100) -> list[tuple[str, int]]:
        self._check_open()
        names = sorted(s for s in self._streams if s.startswith(prefix))[:limit]
        return [(s, len(self._streams[s])) for s in names]
