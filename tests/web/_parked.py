"""A cinema whose e-mails are parked, with its console: what the web tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from tidings.examples.cinema.app import Cinema, build_cinema
from tidings.examples.cinema.messages import ReserveSeat
from tidings.examples.cinema.services import EmailProvider, PaymentService
from tidings.web import create_console

TOKEN = "s3cret-token-for-tests"


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.05)


@dataclass
class Parked:
    cinema: Cinema
    client: httpx.AsyncClient
    guests: list[str]


@asynccontextmanager
async def parked_cinema(url: str, guests: int = 3) -> AsyncIterator[Parked]:
    """A cinema on ``url`` whose mail provider rejects every guest's mailbox until repaired,
    with its worker running and every confirmation e-mail dead-lettered; and an HTTP client on
    its console (token ``TOKEN``)."""
    email = EmailProvider(seed=1, transient_rate=0.0, broken_rate=1.0)
    payments = PaymentService(seed=1, decline_rate=0.0, silence_rate=0.0, max_delay=0.06)
    cinema = build_cinema(url, payments=payments, email=email, payment_timeout=30.0)
    app = cinema.app
    names = [f"guest{n:03d}" for n in range(guests)]
    async with app:
        worker = app.worker(lease_ttl=3.0)
        task = asyncio.create_task(worker.run())
        try:
            for n, guest in enumerate(names):
                await app.invoke(ReserveSeat(screening_id="1", seat=f"A{n + 1}", guest=guest))

            async def parked() -> bool:
                return len(await app.dead_letters.list(subscription="email")) == guests

            await wait_for(parked, 30, "every e-mail being dead-lettered")
            site = create_console(app, token=TOKEN, manage=False)
            transport = httpx.ASGITransport(app=site)
            async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
                yield Parked(cinema, client, names)
        finally:
            worker.stop()
            await task
