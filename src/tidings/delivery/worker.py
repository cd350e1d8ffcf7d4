"""The worker: delivers the log to every subscription and sent-command handler of an app.

One mechanism serves both: a *subscription* is a named cursor over the log, filtered by message
types, split into partitions by stream. A worker leases partitions (so several workers, in several
processes, can share a subscription), reads the log in batches, runs the handler for each message in
stream order, and commits everything the handlers wrote, the outcomes of sent commands, the messages
it holds back and the moved checkpoints in one transaction. The checkpoint move is fenced by the
lease, so a worker that lost its lease cannot apply its batch twice. A heartbeat renews the leases
every third of a lease whatever the runners are doing, and a runner commits a batch in slices of
that length, so a slow batch keeps its leases and a lost lease costs one slice.

A failing message is retried at once (``RetryPolicy.immediate``), then *held*: ``retrying`` with a
due time on the store's clock, then ``dead``. While a stream has a held message, its later messages
are held as ``waiting`` behind it (sequenced parking): per-stream order is never broken, and every
other stream keeps flowing. When a held message's turn comes (due, retried by an operator, or its
head was skipped), the stream's held messages are replayed in order.

A failure of the store itself (also inside a handler) is no attempt of a message: the subscription
pauses and tries again with backoff, keeping the slice it handled, and the outage is logged once
with its start and end (``worker.outages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from tidings.context import Services
from tidings.delivery.alerts import Alerts
from tidings.delivery.handling import OUTAGE
from tidings.delivery.leases import partition_of
from tidings.delivery.observer import Observer
from tidings.delivery.outage import Outages, pause
from tidings.delivery.runner import Runner, Settings
from tidings.delivery.subscriptions import Subscriptions, routes_of
from tidings.errors import ConfigurationError, StoreError
from tidings.ids import uuid7
from tidings.registry import Handlers
from tidings.store import ChangeFeed, Store

log = logging.getLogger("tidings.worker")

__all__ = ["Companion", "Worker", "partition_of"]


class Companion(Protocol):
    """Something a worker runs beside its subscriptions (a transport's relay and inbox)."""

    async def run(self, stopping: asyncio.Event) -> None: ...


class Worker:
    """Runs every subscription and sent-command handler of an app (made by ``app.worker()``).

    ``lease_ttl`` is how long a partition stays with a worker that stopped renewing it (a killed
    worker's partitions are taken over after at most this long). A heartbeat renews the leases
    every third of it, also while handlers run, and a runner commits what it has handled at least
    as often, however large the batch: a slow batch neither loses its leases nor its work. A
    handler that blocks the event loop (a slow synchronous one) stops the heartbeat too; make
    slow handlers ``async``. ``batch_size`` is how many messages are read at once. ``ready`` opens
    the store (once) before it runs.
    """

    def __init__(
        self,
        store: Store,
        handlers: Handlers,
        services: Services,
        alerts: Alerts,
        *,
        ready: Callable[[], Awaitable[object]] | None = None,
        worker_id: str | None = None,
        lease_ttl: float = 10.0,
        batch_size: int = 500,
        idle_poll: float = 0.25,
        replay_interval: float = 0.1,
        seed: int | None = None,
        observer: Observer | None = None,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.services = services
        self.alerts = alerts
        self.ready = ready
        if not lease_ttl > 0 or batch_size < 1:
            raise ConfigurationError(
                f"Worker: lease_ttl must be > 0 seconds and batch_size >= 1 "
                f"(got lease_ttl={lease_ttl!r}, batch_size={batch_size!r})"
            )
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid7()[-12:]}"
        self.lease_ttl = lease_ttl
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.replay_interval = replay_interval
        self.rng = random.Random(seed)
        self.observer = observer
        self.runners: list[Runner] = []
        #: what runs beside the subscriptions until the worker stops (a transport's relay, inbox)
        self.companions = tuple(companions)
        self._stopping = asyncio.Event()
        self._schedule_wakeup = asyncio.Event()
        #: the store's outages this worker met (``outages.count``, ``outages.down``)
        self.outages = Outages(self.id)
        #: when (``time.monotonic()``) the leases were last renewed, and whether renewing fails
        self._renewed_at: float | None = None
        self._renewing_fails = False

    async def _prepare(self) -> None:
        if self.ready is not None:
            await self.ready()
        problems = self.handlers.problems()
        if problems:
            raise ConfigurationError(
                "the app is not ready to run: " + "; ".join(p.message for p in problems)
            )
        settings = Settings(
            self.id, self.lease_ttl, self.batch_size, self.replay_interval, self.rng, self.observer
        )
        subscriptions = Subscriptions(self.store, self.handlers, self.services)
        self.runners = [
            Runner(route, self.store, self.services, self.alerts, settings)
            for route in await subscriptions.prepare(routes_of(self.handlers))
        ]
        for runner in self.runners:
            await runner.leases.setup()

    def stop(self) -> None:
        """Ask the worker to finish what is in flight and stop."""
        self._stopping.set()
        self._schedule_wakeup.set()
        for runner in self.runners:
            runner.wakeup.set()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``), then release leases."""
        await self._prepare()
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        # The heartbeat outlives the runners: it keeps their leases while they finish a slice.
        runners_done = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(runners_done), name="tidings:heartbeat")
        tasks = [
            asyncio.create_task(self._run_runner(r), name=f"tidings:{r.route.name}")
            for r in self.runners
        ]
        tasks.append(asyncio.create_task(self._schedule(), name="tidings:schedule"))
        tasks += [asyncio.create_task(c.run(self._stopping)) for c in self.companions]
        listening = None
        if isinstance(self.store, ChangeFeed):
            listening = asyncio.create_task(self._listen(), name="tidings:listen")
            tasks.append(listening)
        # It reads the whole log: beside the runners, not before them.
        warning = asyncio.create_task(self._warn_unhandled(), name="tidings:unhandled")
        tasks.append(warning)
        log.info("worker %s running %d subscription(s)", self.id, len(self.runners))
        try:
            await self._stopping.wait()
        finally:
            self.stop()
            if listening is not None:
                listening.cancel()  # it only wakes the others; nothing to finish
            warning.cancel()  # a warning not given yet is not worth waiting for
            done = await asyncio.gather(*tasks, return_exceptions=True)
            runners_done.set()
            done += await asyncio.gather(heartbeat, return_exceptions=True)
            for result in done:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    log.error("worker task failed: %r", result)
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            try:
                await self.store.release(self.id)
            except StoreError as exc:
                log.warning("could not release leases: %s", exc)
            log.info("worker %s stopped", self.id)

    async def _warn_unhandled(self) -> None:
        """Log a warning for each type the log holds that nothing here handles."""
        subscriptions = Subscriptions(self.store, self.handlers, self.services)
        try:
            unhandled = await subscriptions.unhandled()
        except StoreError as exc:
            log.warning("could not tell what the log holds that nothing here handles: %s", exc)
            return
        for found in unhandled:
            log.warning(
                "the log holds %d %s(s) of type %s that nothing here handles: %s",
                found.count,
                found.kind,
                found.type,
                found.reason,
            )

    async def _run_runner(self, runner: Runner) -> None:
        self.services.committer.add_wakeup(runner.wakeup)
        idle = 0.005
        failures = 0
        try:
            while not self._stopping.is_set():
                runner.wakeup.clear()
                started = time.monotonic()
                try:
                    did = await runner.step()
                except OUTAGE as exc:
                    # The subscription waits for the store; what it handled is kept to commit.
                    self.outages.failed(started, exc)
                    failures += 1
                    await self._pause(pause(failures))
                    continue
                except StoreError as exc:
                    log.warning("%s: the store refused (%s); retrying", runner.route.name, exc)
                    failures += 1
                    await self._pause(pause(failures))
                    continue
                except Exception:
                    log.exception("%s: unexpected error; retrying", runner.route.name)
                    failures += 1
                    await self._pause(pause(failures))
                    continue
                failures = 0
                if did:
                    idle = 0.005
                    continue
                try:
                    await asyncio.wait_for(runner.wakeup.wait(), timeout=idle)
                except TimeoutError:
                    idle = min(idle * 2, self.idle_poll)
        finally:
            self.services.committer.discard_wakeup(runner.wakeup)

    async def _heartbeat(self, until: asyncio.Event) -> None:
        """Renew every runner's leases until ``until`` is set, independently of their batches."""
        while not until.is_set():
            wait = await self._renew()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), timeout=wait)

    async def _renew(self) -> float:
        """Record this worker's heartbeat and let each runner claim its share; returns the seconds
        until the next renewal is due."""
        ttl = self.lease_ttl
        started = time.monotonic()
        try:
            live = await self.store.heartbeat(self.id, ttl / 2)
            wait = ttl / 3
            for runner in self.runners:
                wait = min(wait, await runner.leases.claim(live))
        except StoreError as exc:
            if isinstance(exc, OUTAGE):
                self.outages.failed(started, exc)
            if not self._renewing_fails:
                log.warning("worker %s could not renew its leases (%s); retrying", self.id, exc)
            self._renewing_fails = True
            return min(self.idle_poll, ttl / 10)
        self.outages.succeeded(started)  # it wrote: the store is back, for reads and writes
        now = time.monotonic()
        if self._renewed_at is not None and now - self._renewed_at > ttl * 2 / 3:
            log.warning(
                "worker %s renewed its leases %.1fs after the previous renewal (lease %.1fs)%s",
                self.id,
                now - self._renewed_at,
                ttl,
                ": they had run out, other workers may have taken partitions over"
                if now - self._renewed_at > ttl
                else "; a blocked event loop or a slow store delays renewals",
            )
        elif self._renewing_fails:
            log.info("worker %s renews its leases again", self.id)
        self._renewed_at = now
        self._renewing_fails = False
        if self.observer is not None:
            self.observer.heartbeat(self.id)
        return wait

    @property
    def holds_leases(self) -> bool:
        """Whether this worker renewed its leases within the lease time (a readiness probe)."""
        renewed = self._renewed_at
        return (
            renewed is not None
            and not self._renewing_fails
            and time.monotonic() - renewed < self.lease_ttl
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _listen(self) -> None:
        """Wake every runner when the store says the log grew in another process (PostgreSQL's
        LISTEN/NOTIFY); polling stays the safety net."""
        store = self.store
        assert isinstance(store, ChangeFeed)
        wait = store.wait_for_change
        while not self._stopping.is_set():
            try:
                await wait(self.idle_poll * 4)
            except StoreError as exc:
                log.warning("listening for changes failed: %s", exc)
                await asyncio.sleep(self.idle_poll)
                continue
            for runner in self.runners:
                runner.wakeup.set()
            self._schedule_wakeup.set()

    async def _schedule(self) -> None:
        wakeup = self._schedule_wakeup
        self.services.committer.add_wakeup(wakeup)
        try:
            while not self._stopping.is_set():
                wakeup.clear()
                started = time.monotonic()
                try:
                    if await self.store.release_due():
                        for runner in self.runners:
                            runner.wakeup.set()
                        continue
                    due = await self.store.next_due()
                except OUTAGE as exc:
                    self.outages.failed(started, exc)
                    due = None
                except StoreError as exc:
                    log.warning("scheduler: %s", exc)
                    due = None
                timeout = self.idle_poll * 4 if due is None else min(due, self.idle_poll * 4)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=max(timeout, 0.001))
        finally:
            self.services.committer.discard_wakeup(wakeup)

    async def drain(self, *, max_rounds: int = 100_000) -> int:
        """Deliver until nothing is left to do now, as the only worker (tests, the harness, scripts).

        Held messages that are not yet due stay held. Returns the number of rounds that did work.
        """
        await self._prepare()
        for runner in self.runners:
            await runner.leases.claim(live=1)
        rounds = 0
        try:
            while rounds < max_rounds:
                did = await self.store.release_due() > 0
                for runner in self.runners:
                    did = await runner.step(replay=True) or did
                if not did:
                    return rounds
                rounds += 1
            return rounds
        finally:
            await self.store.release(self.id)
