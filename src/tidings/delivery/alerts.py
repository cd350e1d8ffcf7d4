"""Alerts: structured reports of things an operator must look at, delivered to callbacks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import msgspec

log = logging.getLogger("tidings.alerts")


#: Severities of alerts, from the least urgent.
WARNING, CRITICAL = "warning", "critical"


class Alert(msgspec.Struct, frozen=True):
    """Something needs attention: ``kind`` is the rule that fired (``message-parked``,
    ``command-dead``, ``lag``, ``worker-lost``); ``severity`` is ``warning`` or ``critical``.
    Fields that do not apply to a rule are empty (a lag alert names no message)."""

    kind: str
    subscription: str
    message_id: str
    type: str
    stream: str
    error: str
    attempts: int
    at: float
    severity: str = WARNING


AlertCallback = Callable[[Alert], Awaitable[None] | None]


class Alerts:
    """The callbacks registered with ``app.on_alert``. A failing callback is logged, never raised:
    an alert must not stop the delivery that raised it."""

    def __init__(self) -> None:
        self._callbacks: list[AlertCallback] = []
        #: subscriptions whose dead letters are critical (``@app.subscriber(..., critical=True)``)
        self.critical: set[str] = set()

    def add(self, callback: AlertCallback) -> None:
        self._callbacks.append(callback)

    def severity(self, alert: Alert) -> Alert:
        """``alert`` with its severity by the rules: a dead sent command, and a dead letter in a
        critical subscription, are critical."""
        if alert.kind == "command-dead" or (
            alert.kind == "message-parked" and alert.subscription in self.critical
        ):
            return msgspec.structs.replace(alert, severity=CRITICAL)
        return alert

    @property
    def routed(self) -> bool:
        """Whether any callback is told of alerts (beyond the log)."""
        return bool(self._callbacks)

    async def fire(self, alert: Alert) -> None:
        """Log ``alert`` (the log sink) and give it to every callback, with its severity."""
        alert = self.severity(alert)
        level = logging.ERROR if alert.severity == CRITICAL else logging.WARNING
        if alert.message_id:
            log.log(
                level,
                "%s (%s): %s %s in stream %r for %s after %d attempt(s): %s",
                alert.kind,
                alert.severity,
                alert.type,
                alert.message_id,
                alert.stream,
                alert.subscription,
                alert.attempts,
                alert.error,
            )
        else:
            log.log(
                level,
                "%s (%s): %s: %s",
                alert.kind,
                alert.severity,
                alert.subscription,
                alert.error,
            )
        for callback in self._callbacks:
            try:
                result = callback(alert)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("alert callback %r failed", callback)
