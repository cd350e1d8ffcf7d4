"""A cinema box office over HTTP with FastAPI: reserve seats now, issue receipts later.

Run it: ``TIDINGS_STORE=sqlite:///cinema.db uvicorn main:api`` (from this folder).
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tidings import App, Command, Context, Event, Refused
from tidings.integrations.fastapi import AppDep, accepted, install, lifespan, outcomes


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


api = FastAPI(lifespan=lifespan(cinema, worker=True))
install(api)
api.include_router(outcomes())


@api.post("/screenings/{screening}/seats/{seat}")
async def reserve(screening: str, seat: str, guest: str, app: AppDep) -> dict[str, str]:
    return {"reservation": await app.invoke(ReserveSeat(screening, seat, guest))}


@api.post("/screenings/{screening}/seats/{seat}/receipt", status_code=202)
async def receipt(screening: str, seat: str, request: Request, app: AppDep) -> JSONResponse:
    return accepted(request, await app.send(IssueReceipt(screening, seat)))
