"""Server time of every console page on a store of 1,000,000 events and 10,000 dead letters.

Run by hand (not in CI)::

    python benchmarks/console.py                    # SQLite, 1,000,000 events, 10,000 dead
    python benchmarks/console.py --events 100000    # a smaller store
    python benchmarks/console.py --postgres postgresql://postgres@127.0.0.1/test

The store is filled once with the cinema's log: purchases of four messages each (a reservation,
its payment request, the payment, the confirmation), one correlation per purchase and each
message caused by the one before; outcomes of the sent commands; purchase workflow instances;
and 10,000 confirmations dead-lettered in the ``email`` subscription with four attempts each,
from three causes. Rows are written with the backend's own driver into tidings' tables (the
migrations made them), which is only how the data is put there fast. Each page is then asked
for through the console's ASGI app in this process (no network, so the time is the server's),
after one warm-up, and the median of ``--repeat`` requests is reported against the 150 ms target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tidings.examples.cinema.app import build_app
from tidings.ids import uuid7
from tidings.web import create_console

TARGET_MS = 150.0
TYPES = (
    ("cinema.SeatReserved", "event"),
    ("cinema.RequestPayment", "command"),
    ("cinema.PaymentReceived", "event"),
    ("cinema.ReservationConfirmed", "event"),
)
CAUSES = (
    "MailboxUnavailable: mailbox of guest{n:03d} rejects mail (550 mailbox unavailable)",
    "MailboxUnavailable: provider timed out sending to guest{n:03d} (try 4)",
    "ConnectionError: smtp.example.org:25 refused connection {n}",
)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/tidings/delivery/handling.py", line 204, in handle\n'
    "    result = await result\n"
    '  File "/srv/cinema/app.py", line 98, in email_guest\n'
    "    cinema.email.send(\n"
    '  File "/srv/cinema/services.py", line 71, in send\n'
    "    raise MailboxUnavailable(text)\n"
    "{error}\n"
)


def rows(events: int, start: float) -> Iterator[tuple[Any, ...]]:
    """The log's rows: purchases of four messages, one correlation each, chained causes."""
    position = 0
    purchase = 0
    versions: dict[str, int] = {}
    while position < events:
        purchase += 1
        rid = f"{purchase % 4 + 1}-S{purchase}-guest{purchase % 1000:03d}"
        streams = (
            f"screening-{purchase % 40 + 1}",
            f"$cmd-cinema.RequestPayment-{purchase}",
            f"payment-{rid}",
            f"screening-{purchase % 40 + 1}",
        )
        cause = None
        correlation = None
        for (kind_type, kind), stream in zip(TYPES, streams, strict=True):
            if position >= events:
                return
            position += 1
            versions[stream] = versions.get(stream, 0) + 1
            mid = str(uuid7())
            correlation = correlation or mid
            data = msgspec.json.encode(
                {
                    "screening_id": str(purchase % 4 + 1),
                    "seat": f"S{purchase}",
                    "guest": f"guest{purchase % 1000:03d}",
                    "reservation_id": rid,
                    "amount_cents": 1250,
                }
            )
            yield (
                position,
                stream,
                versions[stream],
                mid,
                kind,
                kind_type,
                1,
                data,
                correlation,
                cause,
                None,
                start + position * 0.001,
            )
            cause = mid


def fill_sqlite(path: Path, events: int, dead: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    start = time.time() - events * 0.001 - 60
    db.executemany("INSERT INTO tidings_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows(events, start))
    confirmed = db.execute(
        "SELECT global_position, stream, id, recorded_at FROM tidings_log "
        "WHERE type = 'cinema.ReservationConfirmed' ORDER BY global_position DESC LIMIT ?",
        (dead,),
    ).fetchall()
    held = []
    for n, (position, stream, mid, at) in enumerate(confirmed):
        error = CAUSES[n % len(CAUSES)].format(n=n % 1000)
        tb = TRACEBACK.format(error=error)
        history = json.dumps(
            [{"at": at + i, "error": error, "traceback": tb} for i in range(4)]
        ).encode()
        held.append(
            (
                "email",
                0,
                stream,
                position,
                mid,
                "cinema.ReservationConfirmed",
                "dead",
                4,
                error,
                tb,
                history,
                None,
                at,
                at + 3,
            )
        )
    db.executemany(
        "INSERT INTO tidings_held (subscription, partition, stream, global_position, message_id, "
        "type, status, attempts, error, traceback, history, due_at, first_failed_at, "
        "last_failed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        held,
    )
    commands = db.execute(
        "SELECT id, recorded_at FROM tidings_log WHERE type = 'cinema.RequestPayment' "
        "ORDER BY global_position DESC LIMIT 10000"
    ).fetchall()
    db.executemany(
        "INSERT INTO tidings_outcomes VALUES (?, 'cinema.RequestPayment', 'succeeded', ?, NULL, "
        "NULL, NULL, 1, ?)",
        [(mid, b'"paid"', at) for mid, at in commands],
    )
    db.executemany(
        "INSERT INTO tidings_documents VALUES ('workflow:purchase', ?, ?, 1)",
        [
            (
                f"r{n:06d}",
                json.dumps(
                    {
                        "version": 3,
                        "done": n % 3 == 0,
                        "state": {"stage": "paid"},
                        "timeouts": {} if n % 3 else {"payment": "t"},
                    }
                ).encode(),
            )
            for n in range(10_000)
        ],
    )
    last = events
    for name, parts in (("email", 4), ("website", 4), ("workflow:purchase", 4)):
        db.executemany(
            "INSERT OR REPLACE INTO tidings_partitions VALUES (?, ?, ?, ?, NULL, NULL)",
            [(name, p, parts, last - 500) for p in range(parts)],
        )
    db.executemany(
        "INSERT INTO tidings_audit (at, actor, action, target, detail) VALUES (?,?,?,?,?)",
        [(start + n, "ada", "dlq.retry", f"email#{n}", "bench") for n in range(2000)],
    )
    db.commit()
    db.close()


async def measure(url: str, repeat: int) -> list[tuple[str, float]]:
    app = build_app(url)
    async with app:
        site = create_console(app, token="bench", manage=False)
        transport = httpx.ASGITransport(app=site)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
            causes = (await http.get("/api/dead-letters")).json()
            held = causes[0]["ids"][0]
            shown = (await http.get(f"/api/dead-letters/{held}")).json()
            position = shown["envelope"]["global_position"]
            correlation = shown["envelope"]["correlation_id"]
            pages = [
                "/",
                "/dead-letters",
                f"/dead-letters/causes/{causes[0]['key']}",
                f"/dead-letters/{held}",
                "/messages",
                "/messages?type=cinema.PaymentReceived",
                "/messages?stream=payment-",
                f"/messages?correlation={correlation}",
                "/messages?since="
                + time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 300)),
                f"/messages/{position}",
                f"/correlations/{correlation}",
                "/subscriptions",
                "/workflows",
                "/outcomes",
                "/audit",
                "/actions",
                f"/actions/IssueReceipt?message={position}",
                "/api/overview",
                "/api/dead-letters",
                f"/api/dead-letters/{held}",
                "/api/openapi.json",
            ]
            results = []
            for page in pages:
                got = await http.get(page)
                assert got.status_code == 200, (page, got.status_code, got.text[:300])
                times = []
                for _ in range(repeat):
                    began = time.perf_counter()
                    await http.get(page)
                    times.append((time.perf_counter() - began) * 1000)
                results.append((page, statistics.median(times)))
            return results


def report(results: list[tuple[str, float]], label: str) -> None:
    print(f"\n{label}: median server time per page (target {TARGET_MS:.0f} ms)")
    for page, ms in results:
        mark = "ok" if ms < TARGET_MS else "OVER"
        print(f"  {ms:8.1f} ms  {mark:4}  {page[:70]}")
    over = [p for p, ms in results if ms >= TARGET_MS]
    print(f"  {len(results) - len(over)} of {len(results)} pages under {TARGET_MS:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="Keep (or reuse) the SQLite file here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidings-console-bench-") as tmp:
        path = args.db or Path(tmp) / "console.db"
        url = f"sqlite:///{path}"
        if not path.exists():

            async def migrate() -> None:
                async with build_app(url):
                    pass

            asyncio.run(migrate())
            began = time.monotonic()
            fill_sqlite(path, args.events, args.dead)
            print(
                f"filled {path}: {args.events} events, {args.dead} dead letters "
                f"in {time.monotonic() - began:.0f}s"
            )
        report(asyncio.run(measure(url, args.repeat)), f"SQLite, {args.events} events")


if __name__ == "__main__":
    main()
