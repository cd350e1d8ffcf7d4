"""Child process for test_two_processes: appends and decides against a SQLite file another process
writes to at the same time.

Usage: python _concurrent_writer.py DB_PATH NAME APPENDS INVOKES

Opens the store, prints ``ready``, waits for a ``go`` line on stdin (so that both writers start
together), then runs, concurrently:

* APPENDS single-event appends, spread over a few shared streams by several tasks;
* INVOKES seat reservations through a decider, on shared screening streams, for seats both
  processes ask for (so some are refused and some meet the other process's writes).

Prints one JSON line with what it saw: every append's (stream, version, global position, index),
every reservation's outcome, and how many times ``decide`` ran. Any exception other than
``Refused`` ends the process with a traceback and a non-zero status.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from tidings import App, Command, Decider, Event, Refused

APPEND_STREAMS = 4
APPEND_TASKS = 8
SCREENINGS = 3
SEATS = [f"{row}{n}" for row in "ABCD" for n in range(1, 11)]
#: Cross-process conflicts are retried; the budget is generous so that a command is not given up
#: on because the other process kept winning the race a few times running.
RETRY_ON_CONFLICT = 100


class TwoProcessNoted(Event):
    writer: str
    index: int


class TwoProcessReserveSeat(Command):
    screening: str
    seat: str
    customer: str


class TwoProcessSeatReserved(Event):
    screening: str
    seat: str
    customer: str


def main(db: str, name: str, appends: int, invokes: int) -> None:
    decide_calls = 0

    def decide(cmd: TwoProcessReserveSeat, taken: frozenset[str]) -> list[Event]:
        nonlocal decide_calls
        decide_calls += 1
        if cmd.seat in taken:
            raise Refused(f"seat {cmd.seat} is taken", code="seat-taken")
        return [
            TwoProcessSeatReserved(screening=cmd.screening, seat=cmd.seat, customer=cmd.customer)
        ]

    app = App(
        name,
        store=f"sqlite:///{db}",
        messages=[TwoProcessNoted, TwoProcessReserveSeat, TwoProcessSeatReserved],
    )
    app.decider(
        Decider(
            decide=decide,
            evolve=lambda taken, event: taken | {event.seat},
            initial=frozenset(),
            stream=lambda cmd: cmd.screening,
        ),
        TwoProcessReserveSeat,
        retry_on_conflict=RETRY_ON_CONFLICT,
    )
    rng = random.Random(name)
    commands = [
        TwoProcessReserveSeat(
            screening=f"screening-{j % SCREENINGS}", seat=rng.choice(SEATS), customer=f"{name}-{j}"
        )
        for j in range(invokes)
    ]

    async def append_slice(first: int) -> list[list[Any]]:
        done = []
        for i in range(first, appends, APPEND_TASKS):
            stream = f"shared-{i % APPEND_STREAMS}"
            result = await app.append(stream, [TwoProcessNoted(writer=name, index=i)])
            done.append([stream, result.version, result.global_position, i])
        return done

    async def reserve(cmd: TwoProcessReserveSeat) -> list[Any]:
        try:
            events = await app.invoke(cmd)
        except Refused:
            return [cmd.customer, cmd.screening, cmd.seat, "refused"]
        assert events == [
            TwoProcessSeatReserved(screening=cmd.screening, seat=cmd.seat, customer=cmd.customer)
        ]
        return [cmd.customer, cmd.screening, cmd.seat, "reserved"]

    async def run() -> dict[str, Any]:
        async with app:
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("expected 'go' on stdin")
            slices, reservations = await asyncio.gather(
                asyncio.gather(*(append_slice(t) for t in range(APPEND_TASKS))),
                asyncio.gather(*(reserve(cmd) for cmd in commands)),
            )
        return {
            "appends": [a for s in slices for a in s],
            "reservations": reservations,
            "decide_calls": decide_calls,
        }

    print(json.dumps(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
