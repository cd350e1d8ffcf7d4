"""Alert rules watched over the store, and the sinks alerts go to: a webhook and a stored record.

Two rules fire where delivery happens (:mod:`tidings.delivery.alerts`): a dead letter
(``message-parked``; critical for a subscriber registered ``critical=True``) and a dead sent
command (``command-dead``, critical). Two are watched by a :class:`Monitor` that reads the store:
a subscription's lag over a threshold (``lag``) and a worker whose lease ran out without being
renewed or released (``worker-lost``: its heartbeat is lost for longer than its lease).

Sinks are ``app.on_alert`` callbacks: the log is always one (``Alerts.fire``); a
:class:`WebhookSink` POSTs each alert as JSON from a background task with a bounded queue,
retrying with backoff, so delivery never waits for it; :class:`StoredAlerts` keeps the recent
alerts in the store, where :func:`recent_alerts` reads them from any process (the console's
banner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

import msgspec

from tidings.delivery.alerts import CRITICAL, WARNING, Alert
from tidings.errors import ConfigurationError
from tidings.ids import uuid7
from tidings.records import DocumentWrite, Transaction
from tidings.store import Store

if TYPE_CHECKING:
    from tidings.app import App

log = logging.getLogger("tidings.alerts")

#: The collection recent alerts are kept in.
ALERTS = "$alerts"


class Rule(msgspec.Struct, frozen=True):
    """An alert rule: its ``name`` (an alert's ``kind``), ``severity`` and ``threshold``
    (messages for dead letters, seconds for lag and a lost worker)."""

    name: str
    severity: str
    threshold: float
    description: str


def rules(*, lag_seconds: float = 300.0, worker_grace: float = 0.0) -> tuple[Rule, ...]:
    """The alert rules, with the thresholds a :class:`Monitor` is given."""
    return (
        Rule(
            "message-parked",
            WARNING,
            1,
            "a dead letter in a subscription (critical for a critical subscriber)",
        ),
        Rule("command-dead", CRITICAL, 1, "a sent command given up on"),
        Rule("lag", WARNING, lag_seconds, "a subscription's oldest unhandled message is older"),
        Rule(
            "worker-lost",
            CRITICAL,
            worker_grace,
            "a worker's lease ran out, unrenewed and unreleased, this many seconds ago",
        ),
    )


class Monitor:
    """Watches ``app``'s store for the ``lag`` and ``worker-lost`` rules, firing each alert once
    until its condition clears. ``check()`` once, or ``run()`` every ``interval`` seconds."""

    def __init__(
        self,
        app: App,
        *,
        lag_seconds: float = 300.0,
        worker_grace: float = 0.0,
        interval: float = 5.0,
    ) -> None:
        if lag_seconds <= 0 or worker_grace < 0 or interval <= 0:
            raise ConfigurationError(
                "Monitor: lag_seconds and interval must be > 0 and worker_grace >= 0 "
                f"(got {lag_seconds!r}, {interval!r}, {worker_grace!r})"
            )
        self.app = app
        self.lag_seconds = lag_seconds
        self.worker_grace = worker_grace
        self.interval = interval
        self._lagging: set[str] = set()
        self._lost: set[str] = set()

    async def check(self) -> list[Alert]:
        """Evaluate the rules once; fire and return the alerts that are new."""
        app = self.app
        await app.open()
        now = await app.store.now()
        fired: list[Alert] = []
        lagging = set()
        for state in await app.subscriptions.list():
            age = state.oldest_age
            if age is None or age <= self.lag_seconds:
                continue
            lagging.add(state.name)
            if state.name not in self._lagging:
                error = (
                    f"the oldest of {state.pending} unhandled message(s) is {age:.0f}s old "
                    f"(rule: over {self.lag_seconds:g}s); is a worker running it "
                    f"({', '.join(state.workers) or 'none is'})?"
                )
                fired.append(Alert("lag", state.name, "", "", "", error, 0, now, WARNING))
        self._lagging = lagging
        expired: dict[str, list[str]] = {}
        for part in await app.store.partitions():
            ends = part.lease_expires
            if part.owner is not None and ends is not None and ends + self.worker_grace < now:
                expired.setdefault(part.owner, []).append(part.subscription)
        for worker, subscriptions in sorted(expired.items()):
            if worker not in self._lost:
                error = (
                    f"worker {worker} stopped renewing its leases without releasing them "
                    f"({len(subscriptions)} partition(s) of {', '.join(sorted(set(subscriptions)))});"
                    " another worker takes them over, if one runs"
                )
                fired.append(Alert("worker-lost", worker, "", "", "", error, 0, now, CRITICAL))
        self._lost = set(expired)
        for alert in fired:
            await app.alerts.fire(alert)
        return fired

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``interval`` seconds until ``stop`` is set; a failing check is logged."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception as exc:
                log.warning("alert monitor: checking the rules failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)


class WebhookSink:
    """POSTs each alert as JSON to ``url`` (``{"app": ..., "kind": ..., ...}``).

    Called by ``Alerts.fire``, it only queues the alert (at most ``queue_size``; beyond, the
    alert is dropped and counted in ``dropped``); a background task posts it, retrying up to
    ``retries`` times with exponential backoff from ``backoff`` seconds. ``await sink.aclose()``
    sends what is queued (within ``timeout``) and stops the task."""

    def __init__(
        self,
        url: str,
        *,
        app: str = "",
        timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.5,
        queue_size: int = 1000,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(f"webhook URL must be http:// or https://, got {url!r}")
        self.url = url
        self.app = app
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.queue_size = queue_size
        self.sent = 0
        self.dropped = 0
        self._queue: asyncio.Queue[Alert] | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self, alert: Alert) -> None:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = self._queue or asyncio.Queue(self.queue_size)
            self._task = asyncio.get_running_loop().create_task(
                self._send_all(self._queue), name="tidings:webhook"
            )
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("webhook %s: %d alerts queued; dropped %s", self.url, self.queue_size, alert)

    async def _send_all(self, queue: asyncio.Queue[Alert]) -> None:
        while True:
            alert = await queue.get()
            try:
                await self._post(alert)
            finally:
                queue.task_done()

    async def _post(self, alert: Alert) -> None:
        body = msgspec.json.encode({"app": self.app, **msgspec.structs.asdict(alert)})
        for attempt in range(self.retries + 1):
            try:
                await asyncio.to_thread(self._post_now, body)
                self.sent += 1
                return
            except Exception as exc:
                if attempt == self.retries:
                    log.error(
                        "webhook %s: giving up on alert %s after %d attempt(s): %s",
                        self.url,
                        alert.kind,
                        attempt + 1,
                        exc,
                    )
                    return
                await asyncio.sleep(min(self.backoff * 2**attempt, 60.0))

    def _post_now(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then stop."""
        if self._task is None or self._queue is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


def _key(at: float) -> str:
    """A stored alert's key: newest first by key order, unique."""
    return f"{1e11 - at:018.6f}-{uuid7()}"


class StoredAlerts:
    """Keeps each alert in ``app``'s store (collection ``$alerts``), the latest ``keep``."""

    def __init__(self, app: App, *, keep: int = 500) -> None:
        self.app = app
        self.keep = keep
        self._written = 0

    async def __call__(self, alert: Alert) -> None:
        write = DocumentWrite(ALERTS, _key(alert.at), msgspec.json.encode(alert))
        await self.app.committer.commit(Transaction(documents=[write]))
        self._written += 1
        if self._written % 50 == 0:
            await self.prune()

    async def prune(self) -> None:
        """Forget the alerts beyond the latest ``keep`` (up to 1000 of them at once)."""
        rows = await self.app.store.documents(ALERTS, limit=self.keep + 1000)
        old = [DocumentWrite(ALERTS, key, None) for key, _ in rows[self.keep :]]
        if old:
            await self.app.committer.commit(Transaction(documents=old))


async def recent_alerts(store: Store, limit: int = 50) -> list[Alert]:
    """The latest alerts :class:`StoredAlerts` kept in ``store``, newest first."""
    rows = await store.documents(ALERTS, limit=limit)
    return [msgspec.json.decode(data, type=Alert) for _, data in rows]


def send_alerts(
    app: App, *, webhook: str | None = None, keep: int = 500
) -> tuple[StoredAlerts, WebhookSink | None]:
    """Give ``app``'s alerts to the store (:func:`recent_alerts` reads them) and, when given, to
    a ``webhook``; returns the sinks."""
    stored = StoredAlerts(app, keep=keep)
    app.on_alert(stored)
    sink = None
    if webhook is not None:
        sink = WebhookSink(webhook, app=app.name)
        app.on_alert(sink)
    return stored, sink
