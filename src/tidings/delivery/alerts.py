"""Alerts: structured reports of things an operator must look at, delivered to callbacks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import msgspec

log = logging.getLogger("tidings.alerts")


class Alert(msgspec.Struct, frozen=True):
    """Something needs attention: ``kind`` is ``message-parked`` or ``command-dead``."""

    kind: str
    subscription: str
    message_id: str
    type: str
    stream: str
    error: str
    attempts: int
    at: float


AlertCallback = Callable[[Alert], Awaitable[None] | None]


class Alerts:
    """The callbacks registered with ``app.on_alert``. A failing callback is logged, never raised:
    an alert must not stop the delivery that raised it."""

    def __init__(self) -> None:
        self._callbacks: list[AlertCallback] = []

    def add(self, callback: AlertCallback) -> None:
        self._callbacks.append(callback)

    @property
    def routed(self) -> bool:
        """Whether any callback is told of alerts (beyond the log)."""
        return bool(self._callbacks)

    async def fire(self, alert: Alert) -> None:
        log.warning(
            "%s: %s %s in stream %r for %s after %d attempt(s): %s",
            alert.kind,
            alert.type,
            alert.message_id,
            alert.stream,
            alert.subscription,
            alert.attempts,
            alert.error,
        )
        for callback in self._callbacks:
            try:
                result = callback(alert)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("alert callback %r failed", callback)
