"""The box office's messages and handlers: the same App a FastAPI or Flask service would run."""

from __future__ import annotations

from tidings import App, Command, Context, Event, Refused


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


cinema = App("box-office")  # its store comes from settings.TIDINGS


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
