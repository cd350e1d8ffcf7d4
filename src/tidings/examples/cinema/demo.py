"""``tidings demo``: a few hundred guests buy tickets at once, and the operator repairs what failed.

Guests reserve seats concurrently (some seats are contested and refused), the payment service is
slow and sometimes declines or never answers (those reservations time out and release their
seats), and the e-mail provider is flaky (some e-mails end up dead-lettered). Then the operator
sees the dead letters with their cause, repairs the provider, retries them, and the e-mails go out.
Deterministic given the seed: the same guests, seats, payments and failures every time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tidings import App, Event, Refused
from tidings.delivery import Alert
from tidings.examples.cinema.app import Cinema, build_cinema
from tidings.examples.cinema.messages import ReserveSeat
from tidings.examples.cinema.purchase import Purchase
from tidings.examples.cinema.services import EmailProvider
from tidings.records import DEAD, Held


class DemoStarted(Event, type_name="cinema.DemoStarted"):
    """A run of the demo began (the runs are counted to give each its own guests)."""

    seed: int
    guests: int


@dataclass
class DemoResult:
    """What the demo counted, and the invariants it checked."""

    requested: int = 0
    reserved: int = 0
    refused: int = 0
    #: reservations in the whole store (more than ``reserved`` when the file was used before)
    reserved_in_store: int = 0
    confirmed: int = 0
    released_timeout: int = 0
    released_declined: int = 0
    receipts: int = 0
    emails_sent_before_repair: int = 0
    dead_letters: int = 0
    alerts: int = 0
    emails_sent_after_repair: int = 0
    dead_letter_causes: list[tuple[str, int]] = field(default_factory=list)
    invariants: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.invariants) and all(self.invariants.values())


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: {what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def run_demo(
    db: Path,
    *,
    seed: int = 7,
    guests: int = 300,
    screenings: int = 4,
    seats_per_screening: int = 100,
    payment_timeout: float = 2.0,
    console: Console | None = None,
    worker_options: dict[str, float] | None = None,
    repair: bool = True,
    then: Callable[[Cinema], Awaitable[None]] | None = None,
) -> DemoResult:
    """Run the whole story against the SQLite file ``db`` and return what happened. Without
    ``repair`` the dead letters are left for an operator; ``then(cinema)`` runs at the end with
    the App still open (``tidings demo --serve`` keeps the console up there)."""
    console = console or Console()
    email = EmailProvider(seed=seed, outbox=db.with_name(db.name + ".outbox"))
    cinema = build_cinema(
        f"sqlite:///{db}", seed=seed, payment_timeout=payment_timeout, email=email
    )
    app = cinema.app
    result = DemoResult(requested=guests)
    async with app:
        # A second run on the same file (after a kill, say) adds new guests; it also finishes
        # whatever the first one left, because the worker picks up where the store says.
        run = len(await app.store.streams(prefix="demo-run-", limit=10_000))
        await app.publish(DemoStarted(seed=seed, guests=guests), stream=f"demo-run-{run + 1}")
    rng = random.Random(seed + run)
    wishes = guest_wishes(rng, guests, screenings, seats_per_screening)
    async with app:
        # A short lease: after a kill, the next run takes the dead worker's partitions over quickly.
        worker = app.worker(**{"lease_ttl": 2.0, **(worker_options or {})})

        def count_alert(alert: Alert) -> None:
            result.alerts += 1

        app.on_alert(count_alert)
        running: asyncio.Task[None] | None = None

        def open_the_box_office() -> None:
            # The worker starts once every guest has asked: no seat is released (a payment
            # declined or never made) while guests are still asking, so the story a seed tells
            # does not depend on how fast this machine is.
            nonlocal running
            running = asyncio.create_task(worker.run())

        try:
            await _buy(cinema, wishes, result, console, open_the_box_office)
            await _summarise(cinema, result)
            print_summary(result, console)
            if repair:
                await _operate(cinema, result, console)
        finally:
            worker.stop()
            if running is not None:
                await running
        await _check(cinema, result, repair)
        if then is not None:
            await then(cinema)
    print_invariants(result, console)
    return result


def guest_wishes(
    rng: random.Random, guests: int, screenings: int, seats_per_screening: int
) -> list[tuple[str, str, str]]:
    """``(screening, seat, guest)`` each guest asks for."""
    rows = "ABCDEFGHIJ"
    seat_names = [f"{rows[i // 10]}{i % 10 + 1}" for i in range(seats_per_screening)]
    # Most guests want the good seats: the first third of each screening is contested.
    return [
        (
            f"{rng.randrange(screenings) + 1}",
            rng.choice(
                seat_names[: max(1, len(seat_names) // 3)] if rng.random() < 0.6 else seat_names
            ),
            f"guest{n:03d}",
        )
        for n in range(guests)
    ]


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


async def ask_for_seats(
    app: App, wishes: list[tuple[str, str, str]], result: DemoResult, progress: Progress
) -> None:
    """Every guest asks ``app`` for a seat at once; the reserved and the refused are counted."""
    asking = progress.add_task("guests reserving seats", total=len(wishes))

    async def reserve(screening_id: str, seat: str, guest: str) -> None:
        try:
            await app.invoke(ReserveSeat(screening_id=screening_id, seat=seat, guest=guest))
            result.reserved += 1
        except Refused:
            result.refused += 1
        progress.advance(asking)

    await asyncio.gather(*(reserve(*w) for w in wishes))


async def _buy(
    cinema: Cinema,
    wishes: list[tuple[str, str, str]],
    result: DemoResult,
    console: Console,
    then: Callable[[], None],
) -> None:
    """Every guest asks for a seat at once; ``then`` (starting the worker) runs after all have."""
    app = cinema.app
    with _progress(console) as progress:
        await ask_for_seats(app, wishes, result, progress)
        then()
        reserved = await _count(app, "cinema.SeatReserved")
        settling = progress.add_task("purchases paid, or released", total=reserved)

        async def purchases_done() -> bool:
            # Ended in the store's own terms: the seat's confirmation or release is recorded
            # (the workflow's stage moves a moment earlier, when it sends the command).
            ended = await _count(app, "cinema.ReservationConfirmed") + await _count(
                app, "cinema.SeatReleased"
            )
            progress.update(settling, completed=ended)
            return ended == reserved

        await wait_for(purchases_done, 60, "every purchase ending")
        confirmed = await _count(app, "cinema.ReservationConfirmed")
        mailing = progress.add_task("e-mails sent or dead-lettered", total=confirmed)
        receipting = progress.add_task("receipts issued", total=confirmed)

        async def mails_done() -> bool:
            dead = len(await app.dead_letters.list(subscription="email", limit=10_000))
            receipts = len(await app.documents("receipts", limit=100_000))
            progress.update(mailing, completed=len(cinema.email.sent) + dead)
            progress.update(receipting, completed=receipts)
            return len(cinema.email.sent) + dead == confirmed and receipts == confirmed

        await wait_for(mails_done, 60, "every e-mail being sent or dead-lettered")


async def _count(app: App, type_name: str) -> int:
    count, after = 0, 0
    while True:
        page = await app.store.read_all(after=after, types=[type_name], limit=5000)
        if not page:
            return count
        count += len(page)
        after = page[-1].global_position


async def _summarise(cinema: Cinema, result: DemoResult) -> None:
    app = cinema.app
    result.reserved_in_store = await _count(app, "cinema.SeatReserved")
    result.confirmed = await _count(app, "cinema.ReservationConfirmed")
    reasons = Counter[str]()
    for env in await app.read_all(types=["cinema.SeatReleased"], limit=100_000):
        reasons[env.message.reason] += 1
    result.released_timeout = reasons["no payment in time"]
    result.released_declined = sum(n for r, n in reasons.items() if r.startswith("payment failed"))
    result.receipts = len(await app.documents("receipts", limit=100_000))
    result.emails_sent_before_repair = len(cinema.email.sent)
    dead = await app.dead_letters.list(subscription="email", limit=10_000)
    result.dead_letters = len(dead)
    result.dead_letter_causes = [
        (g.error, g.count) for g in await app.dead_letters.groups(subscription="email")
    ]


async def _operate(cinema: Cinema, result: DemoResult, console: Console) -> None:
    app = cinema.app
    dead = await app.dead_letters.list(subscription="email", limit=10_000)
    table = Table(title=f"the operator's view: {len(dead)} dead letter(s) in 'email'")
    for column in ("id", "stream", "attempts", "cause"):
        table.add_column(column)
    for held in dead[:8]:
        table.add_row(str(held.id), held.stream, str(held.attempts), held.error or "")
    if len(dead) > 8:
        table.add_row("…", f"and {len(dead) - 8} more", "", "")
    console.print(table)
    if not dead:
        return
    console.print(
        "the provider is repaired (the broken mailboxes accept mail again); retrying every dead letter…"
    )
    cinema.email.repaired = True
    for group in await app.dead_letters.groups(subscription="email"):
        await app.dead_letters.retry_error(group.error, subscription="email", actor="demo-operator")

    async def all_sent() -> bool:
        return len(cinema.email.sent) == result.confirmed and not await app.dead_letters.list(
            subscription="email", status=None
        )

    await wait_for(all_sent, 30, "the retried e-mails being delivered")
    result.emails_sent_after_repair = len(cinema.email.sent)
    console.print(
        f"every dead letter retried: {result.emails_sent_after_repair} e-mails delivered in all"
    )


async def _check(cinema: Cinema, result: DemoResult, repaired: bool = True) -> None:
    app = cinema.app
    check_invariants(
        result,
        reservations=await app.documents("reservations", limit=100_000),
        purchases=await app.documents("workflow:purchase", limit=100_000),
        emails_sent=len(cinema.email.sent),
        held=await app.dead_letters.list(status=None, limit=10_000),
        repaired=repaired,
    )


def check_invariants(
    result: DemoResult,
    *,
    reservations: dict[str, Any],
    purchases: dict[str, Any],
    emails_sent: int,
    held: list[Held],
    repaired: bool,
) -> None:
    """Set ``result.invariants`` from the cinema's read model and workflows, the e-mails the
    provider sent and the dead letters of the e-mail subscriber (wherever they are kept)."""
    sold = Counter(
        (r["screening"], r["seat"]) for r in reservations.values() if r["status"] == "confirmed"
    )
    stages = Counter(Purchase(**d["state"]).stage for d in purchases.values())
    result.invariants = {
        "no seat sold twice": all(n == 1 for n in sold.values()) and len(sold) == result.confirmed,
        "every reservation ends confirmed or released": (
            sum(stages.values()) == result.reserved_in_store
            and set(stages) <= {"confirmed", "released"}
        ),
        "receipts issued = reservations confirmed": result.receipts == result.confirmed,
        "every e-mail delivered or dead-lettered": (
            result.emails_sent_before_repair + result.dead_letters == result.confirmed
        ),
    }
    if repaired:
        result.invariants["after the retry, every e-mail delivered"] = (
            emails_sent == result.confirmed and not [h for h in held if h.status == DEAD]
        )


def print_summary(result: DemoResult, console: Console) -> None:
    """The summary table, as the demo prints it."""
    table = Table(title="what happened")
    table.add_column("")
    table.add_column("count", justify="right")
    for label, value in (
        ("guests asking for a seat", result.requested),
        ("reserved", result.reserved),
        ("refused (seat taken)", result.refused),
        ("reservations in the store, all runs", result.reserved_in_store),
        ("confirmed (paid)", result.confirmed),
        ("released: no payment in time", result.released_timeout),
        ("released: payment declined", result.released_declined),
        ("receipts issued", result.receipts),
        ("e-mails sent", result.emails_sent_before_repair),
        ("e-mails dead-lettered", result.dead_letters),
        ("alerts raised (message parked)", result.alerts),
    ):
        table.add_row(label, str(value))
    console.print(table)


def print_invariants(result: DemoResult, console: Console) -> None:
    """The invariants the demo checked at the end."""
    checks = Table(title="invariants")
    checks.add_column("invariant")
    checks.add_column("holds")
    for name, holds in result.invariants.items():
        checks.add_row(name, "[green]yes[/green]" if holds else "[red]NO[/red]")
    console.print(checks)
