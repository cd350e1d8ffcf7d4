"""A cinema box office over HTTP with Flask: reserve seats now, issue receipts later.

Run it: ``TIDINGS_STORE=sqlite:///cinema.db gunicorn -k gthread --threads 8 app:web`` (from
this folder). Each gunicorn process starts its own BlockingApp, and its own worker.
"""

from __future__ import annotations

import os

from flask import Flask, request

from tidings import App, Command, Context, Event, Refused
from tidings.integrations.flask import Tidings


class ReserveSeat(Command):
    screening: str
    seat: str
    guest: str


class SeatReserved(Event):
    screening: str
    seat: str
    guest: str


class IssueReceipt(Command):
    screening: str
    seat: str


cinema = App("box-office", store=os.environ.get("TIDINGS_STORE", "sqlite:///cinema.db"))


@cinema.command(retry_on_conflict=3)  # a concurrent reservation: decide again on fresh reads
async def reserve_seat(cmd: ReserveSeat, ctx: Context) -> str:
    key = f"{cmd.screening}/{cmd.seat}"
    if await ctx.get("seats", key) is not None:
        raise Refused(f"seat {cmd.seat} is taken", code="seat-taken")
    ctx.put("seats", key, cmd.guest)
    ctx.publish(
        SeatReserved(cmd.screening, cmd.seat, cmd.guest), stream=f"screening-{cmd.screening}"
    )
    return key


@cinema.command
async def issue_receipt(cmd: IssueReceipt, ctx: Context) -> str:
    guest = await ctx.get("seats", f"{cmd.screening}/{cmd.seat}")
    if guest is None:
        raise Refused(f"seat {cmd.seat} is not reserved", code="not-reserved")
    return f"receipt for {guest}, seat {cmd.seat}"


web = Flask(__name__)
tidings = Tidings(cinema, web, worker=True)


@web.get("/")
def index() -> dict[str, int]:
    return {"position": tidings.app.position()}


@web.post("/screenings/<screening>/seats/<seat>")
def reserve(screening: str, seat: str) -> dict[str, str]:
    guest = request.args["guest"]
    return {"reservation": tidings.app.invoke(ReserveSeat(screening, seat, guest))}


@web.post("/screenings/<screening>/seats/<seat>/receipt")
def receipt(screening: str, seat: str):  # type: ignore[no-untyped-def]
    return tidings.accepted(tidings.app.send(IssueReceipt(screening, seat)))
