"""What each step of a decider's invoke costs on SQLite, against a hand-written minimal invoke.

Run by hand (not in CI)::

    python benchmarks/layers.py               # 5 rounds, about 2 minutes
    python benchmarks/layers.py --only commit,invoke

A yardstick for ``append.py``'s ``seq`` floor: every slot pairs a contender with ``append.py``'s
``ideal`` (the least a decided invoke must do, written by hand) on the same tables at FULL. Each
contender makes the same command and event and commits the decided transaction through the App's
committer; ``commit`` does nothing more, and each ``steps-…`` slot adds one step of
``DeciderHandler.invoke`` to the one before: checking the command against its type, naming the
stream (validated), taking its turn, the state kept for it, ``decide`` through the decider,
the unit of work (a ``Context``). ``invoke`` is ``app.invoke`` itself. The distance between
two slots is what that step costs.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator

from _pairs import Contender, Pair, Turn, header, main, parser, repeat
from append import IDS, cinema, ideal_invoke, tidings_invoke
from bench_cinema import reserve, screening
from tidings import uuid7
from tidings.context import Context
from tidings.decider import DeciderHandler
from tidings.records import AppendOp, Transaction

STEPS = ("validate", "route", "turn", "state", "decide", "unit")


def stepwise(steps: frozenset[str]) -> Contender:
    """A decided invoke through the committer, with ``steps`` of the handler's own path."""

    @contextlib.asynccontextmanager
    async def contender() -> AsyncIterator[Turn]:
        async with cinema() as app:
            services, factory = app.services, app.factory
            handler = app.handlers.handler_of(reserve("warm", 1)).decider
            assert isinstance(handler, DeciderHandler) and handler.states is not None
            decider, turns, states = handler.decider, handler.turns, handler.states

            async def invoke() -> int:
                command = reserve(str(next(IDS)), 1)
                if "validate" in steps:
                    factory.validate(command)
                message_id = uuid7()
                if "route" in steps:
                    stream = await decider.route(command, services.reader)
                else:
                    stream = screening.stream(command)
                if "turn" in steps and not turns.take(stream):
                    await turns.acquire(stream)
                state, version = frozenset[str](), 0
                if "state" in steps:
                    state, version = states.take(stream) or (decider.initial_state(), 0)
                if "decide" in steps:
                    events = decider.decided(command, state, check_purity=False, stream=stream)
                else:
                    events = screening.decide(command, state)
                if "unit" in steps:
                    unit = Context(factory, services.reader, message_id, message_id)
                    decider.write(unit, stream, events, version)
                    tx = unit.transaction
                else:
                    new = factory.events(events, message_id, message_id)
                    tx = Transaction([AppendOp(stream, new, version)])
                await services.committer.commit(tx)
                if "state" in steps:
                    states.put(stream, state, version, events)
                if "turn" in steps:
                    turns.release(stream)
                return 1

            yield repeat(invoke)

    return contender


def slots() -> list[Pair]:
    found = [Pair("commit", "decided tx through the committer / minimal invoke",
                  ("commit", "minimal"), stepwise(frozenset()), ideal_invoke())]  # fmt: skip
    for n, step in enumerate(STEPS, 1):
        label, steps = "+ " + ", ".join(STEPS[:n]), frozenset(STEPS[:n])
        found.append(
            Pair(f"steps-{step}", label, (step, "minimal"), stepwise(steps), ideal_invoke())
        )
    found.append(Pair("invoke", "app.invoke / minimal invoke", ("invoke", "minimal"),
                      tidings_invoke(1), ideal_invoke()))  # fmt: skip
    return found


if __name__ == "__main__":
    args = parser(__doc__, rounds=5, seconds=0.6).parse_args()
    main(slots(), args, header(["msgspec"], [f"sqlite    {sqlite3.sqlite_version}"]))
