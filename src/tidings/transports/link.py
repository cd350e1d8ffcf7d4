"""A link: one App connected to one broker by its routes — its relay and its inbox, run by the
App's worker (``app.connect(url, routes)``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any, Protocol

from tidings.committer import Committer
from tidings.errors import BrokerError, StoreError
from tidings.ids import uuid7
from tidings.messages import Command, Message
from tidings.registry import Handlers
from tidings.store import Store
from tidings.transports.broker import Broker, open_broker
from tidings.transports.inbox import Inbox
from tidings.transports.relay import Relay
from tidings.transports.routes import Routes

log = logging.getLogger("tidings.transports")


class Linked(Protocol):
    """What a link needs of its App."""

    name: str
    handlers: Handlers

    @property
    def store(self) -> Store: ...

    @property
    def committer(self) -> Committer: ...

    def register(self, *classes: type[Message]) -> None: ...

    async def open(self) -> object: ...


class Link:
    """``app``'s relay and inbox on ``broker`` (a URL or a :class:`Broker`), by ``routes``.

    Its inbox queue is the App's name: the commands this App handles are sent to it, and the
    topics it subscribes to are bound to it. Commands routed to other services are handled
    there, so the App's wiring check does not ask for their handlers here. ``broker_options``
    go to the broker's class with a URL (``timeout``; NATS: ``ack_wait``)."""

    def __init__(
        self,
        app: Linked,
        broker: str | Broker,
        routes: Routes,
        *,
        namespace: str = "tidings",
        batch_size: int = 500,
        lease_ttl: float = 10.0,
        **broker_options: Any,
    ) -> None:
        self.app = app
        self.broker = (
            open_broker(broker, namespace=namespace, **broker_options)
            if isinstance(broker, str)
            else broker
        )
        self.routes = routes
        self.batch_size = batch_size
        self.lease_ttl = lease_ttl
        app.register(*routes.classes)
        for cls in routes.classes:
            if issubclass(cls, Command):
                app.handlers.elsewhere.add(cls)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:relay:{uuid7()[-12:]}"
        self.relay = Relay(
            app.name,
            app.store,
            app.committer,
            self.broker,
            routes,
            owner=self.owner,
            batch_size=batch_size,
            lease_ttl=lease_ttl,
        )
        app.handlers.relays.add(self.relay.name)
        self.inbox = Inbox(
            app.name,
            app.committer,
            self.broker,
            routes,
            owner=self.owner,
            batch_size=batch_size,
            lease_ttl=lease_ttl,
        )
        app.handlers.relays.add(self.inbox.name)
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Open the App and the broker (idempotent): once it returned, what is sent and
        published to this App waits for it on the broker."""
        async with self._opening:
            if self._opened:
                return
            await self.app.open()
            await self.broker.open()
            try:
                await self.broker.prepare(self.app.name, sorted(self.routes.subscriptions))
            except BaseException:
                await self.broker.close()
                raise
            self._opened = True

    async def close(self) -> None:
        """Let the relay's lease go and disconnect from the broker."""
        if not self._opened:
            return
        self._opened = False
        self.inbox.reset()
        try:
            await self.app.store.release(self.owner)
        finally:
            await self.broker.close()

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay and record until ``stopping`` is set (a worker runs this beside its
        subscriptions)."""
        failures = 0
        while not self._opened and not stopping.is_set():
            try:
                await self.open()
            except (BrokerError, StoreError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("%s: %s; trying again", self.app.name, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=min(0.05 * 2**failures, 2.0))
        try:
            await asyncio.gather(self.relay.run(stopping), self.inbox.run(stopping))
        finally:
            await self.close()
