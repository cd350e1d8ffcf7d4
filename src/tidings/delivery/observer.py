"""The observer hook: what an App and its worker tell whoever watches them (metrics, tracing).

The base class does nothing. An App has none unless :func:`tidings.ops.instrument` gives it one,
and every caller checks ``observer is None`` once, so an App nobody watches pays one attribute
check per call and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

T = TypeVar("T")


class Observer:
    """Told of deliveries, leases and heartbeats; each method here does nothing.

    ``route`` is a :class:`~tidings.delivery.handling.Route` and what ``run`` returns a
    :class:`~tidings.delivery.handling.Handled` (typed loosely: this module sits below both).
    """

    async def handling(
        self, route: Any, env: Any, attempts: int, run: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``run`` (one handling of ``env`` after ``attempts`` earlier attempts)."""
        return await run()

    async def invoke(self, handler: Any, command: Any, run: Callable[[], Awaitable[T]]) -> T:
        """Run ``run`` (``handler`` invoked on ``command`` now)."""
        return await run()

    def recording(self, verb: str, message: Any) -> AbstractContextManager[object]:
        """Around an App's ``send`` or ``publish`` (``verb``) of ``message``."""
        return nullcontext()

    def stamp(self, headers: dict[str, str] | None) -> dict[str, str] | None:
        """The headers a new message gets (the trace context added)."""
        return headers

    def partitions_held(self, subscription: str, count: int) -> None:
        """This worker now holds ``count`` partitions of ``subscription``."""

    def lease_lost(self, subscription: str, partitions: int) -> None:
        """This worker lost its lease on ``partitions`` partitions of ``subscription``."""

    def heartbeat(self, worker: str) -> None:
        """``worker`` renewed its leases."""
