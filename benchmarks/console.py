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


def held_rows(confirmed: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Dead letters of the ``email`` subscription for these confirmations, three causes."""
    held = []
    for n, (position, stream, mid, at) in enumerate(confirmed):
        error = CAUSES[n % len(CAUSES)].format(n=n % 1000)
        tb = TRACEBACK.format(error=error)
        history = json.dumps(
            [{"at": at + i, "error": error, "traceback": tb} for i in range(4)]
        ).encode()
        held.append(
            ("email", 0, stream, position, mid, "cinema.ReservationConfirmed", "dead", 4, error,
             tb, history, None, at, at + 3)
        )  # fmt: skip
    return held


def documents() -> list[tuple[Any, ...]]:
    def state(n: int) -> bytes:
        timeouts = {} if n % 3 else {"payment": "t"}
        doc = {"version": 3, "done": n % 3 == 0, "state": {"stage": "paid"}, "timeouts": timeouts}
        return json.dumps(doc).encode()

    return [("workflow:purchase", f"r{n:06d}", state(n), 1) for n in range(10_000)]


def partitions(last: int) -> list[tuple[Any, ...]]:
    return [
        (name, p, 4, last - 500, None, None)
        for name in ("email", "website", "workflow:purchase")
        for p in range(4)
    ]


def audit(start: float) -> list[tuple[Any, ...]]:
    return [(start + n, "ada", "dlq.retry", f"email#{n}", "bench") for n in range(2000)]


HELD = (
    "subscription, partition, stream, global_position, message_id, type, status, attempts, "
    "error, traceback, history, due_at, first_failed_at, last_failed_at"
)
CONFIRMED = (
    "SELECT global_position, stream, id, recorded_at FROM {log} "
    "WHERE type = 'cinema.ReservationConfirmed' ORDER BY global_position DESC LIMIT {n}"
)
#: every sent payment request has its outcome
COMMANDS = "SELECT id, recorded_at FROM {log} WHERE type = 'cinema.RequestPayment'"


def fill_sqlite(path: Path, events: int, dead: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    start = time.time() - events * 0.001 - 60
    db.executemany("INSERT INTO tidings_log VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows(events, start))
    confirmed = db.execute(CONFIRMED.format(log="tidings_log", n=int(dead))).fetchall()
    db.executemany(
        f"INSERT INTO tidings_held ({HELD}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        held_rows(confirmed),
    )
    commands = db.execute(COMMANDS.format(log="tidings_log")).fetchall()
    db.executemany(
        "INSERT INTO tidings_outcomes VALUES (?, 'cinema.RequestPayment', 'succeeded', ?, NULL, "
        "NULL, NULL, 1, ?)",
        [(mid, b'"paid"', at) for mid, at in commands],
    )
    db.executemany("INSERT INTO tidings_documents VALUES (?, ?, ?, ?)", documents())
    db.executemany(
        "INSERT OR REPLACE INTO tidings_partitions VALUES (?, ?, ?, ?, ?, ?)", partitions(events)
    )
    db.executemany(
        "INSERT INTO tidings_audit (at, actor, action, target, detail) VALUES (?,?,?,?,?)",
        audit(start),
    )
    db.commit()
    db.close()


def fill_postgres(url: str, schema: str, events: int, dead: int) -> None:
    import psycopg

    start = time.time() - events * 0.001 - 60
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        s = f'"{schema}"'
        with cur.copy(f"COPY {s}.log FROM STDIN") as copy:
            for row in rows(events, start):
                copy.write_row(row)
        cur.execute(f"UPDATE {s}.head SET top = %s", (events,))
        confirmed = cur.execute(CONFIRMED.format(log=f"{s}.log", n=int(dead))).fetchall()
        with cur.copy(f"COPY {s}.held ({HELD}) FROM STDIN") as copy:
            for row in held_rows(confirmed):
                copy.write_row(row)
        commands = cur.execute(COMMANDS.format(log=f"{s}.log")).fetchall()
        with cur.copy(f"COPY {s}.outcomes FROM STDIN") as copy:
            for mid, at in commands:
                copy.write_row(
                    (mid, "cinema.RequestPayment", "succeeded", b'"paid"', None, None, None, 1, at)
                )
        with cur.copy(f"COPY {s}.documents (collection, key, data, version) FROM STDIN") as copy:
            for row in documents():
                copy.write_row(row)
        with cur.copy(f"COPY {s}.partitions FROM STDIN") as copy:
            for row in partitions(events):
                copy.write_row(row)
        with cur.copy(f"COPY {s}.audit (at, actor, action, target, detail) FROM STDIN") as copy:
            for row in audit(start):
                copy.write_row(row)
        for table in ("log", "held", "outcomes", "documents", "partitions", "audit"):
            cur.execute(f"ANALYZE {s}.{table}")


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
    parser.add_argument("--postgres", help="Also on this PostgreSQL server (a schema of its own).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidings-console-bench-") as tmp:
        path = args.db or Path(tmp) / "console.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            asyncio.run(migrate(url))
            began = time.monotonic()
            fill_sqlite(path, args.events, args.dead)
            print(f"filled {path}: {args.events} events, {args.dead} dead letters "
                  f"in {time.monotonic() - began:.0f}s")  # fmt: skip
        report(asyncio.run(measure(url, args.repeat)), f"SQLite, {args.events} events")
    if args.postgres:
        import psycopg

        schema = f"console_bench_{args.events}"
        pg = f"{args.postgres}?schema={schema}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        try:
            asyncio.run(migrate(pg))
            began = time.monotonic()
            fill_postgres(args.postgres, schema, args.events, args.dead)
            print(
                f"filled schema {schema}: {args.events} events in {time.monotonic() - began:.0f}s"
            )
            report(asyncio.run(measure(pg, args.repeat)), f"PostgreSQL, {args.events} events")
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def migrate(url: str) -> None:
    async with build_app(url):
        pass


if __name__ == "__main__":
    main()
