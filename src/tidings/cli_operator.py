"""The operator's commands: ``tidings subscriptions`` (lag, orphans, reset, delete) and
``tidings dlq`` (list, show, retry, skip). Every action is written to the audit trail."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import typer

from tidings.cli_common import (
    ActorOption,
    AppOption,
    JsonOption,
    StoreOption,
    console,
    open_app,
    payload,
    run,
    table,
    when,
)
from tidings.delivery.subscriptions import Subscriptions, SubscriptionState, Unhandled
from tidings.ops.links import Links, link_states

subscriptions = typer.Typer(
    help="Subscriptions: lag, workers, orphans; reset and delete.",
    invoke_without_command=True,
)
dlq = typer.Typer(help="Dead letters: list, show, retry, skip.", no_args_is_help=True)

ForceOption = Annotated[
    bool, typer.Option("--force", help="Even while a worker holds a lease on it.")
]


def _age(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds:.0f}s"


@subscriptions.callback()
def subscriptions_list(
    ctx: typer.Context,
    store: StoreOption = None,
    app: AppOption = None,
    partitions: Annotated[
        bool, typer.Option("--partitions", help="One row per partition.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """One row per subscription: what it still has to handle (its own types past its checkpoint;
    parked and waiting ones apart), the age of the oldest, who runs it. With --app, a
    subscription the app has no handler for is marked orphaned (a renamed or removed handler).
    Then the relays (lag: routed messages the broker has not confirmed) and the inboxes (who
    receives, what they recorded; with --app, the broker and what each consumes there)."""
    if ctx.invoked_subcommand is not None:
        return

    async def main() -> tuple[list[SubscriptionState], list[Unhandled], Links]:
        async with open_app(store, app) as opened:
            # Only the application's own handlers can tell an orphan or an unknown type.
            ops = Subscriptions(
                opened.store, opened.handlers, opened.services, judge=app is not None
            )
            states = await ops.list()
            links = await link_states(opened.store, states, opened if app is not None else None)
            return states, await ops.unhandled(), links

    states, unhandled, links = run(main)
    rows = [_state_row(s) for s in states]
    shown = {r.subscription: msgspec.to_builtins(r) for r in links.relays}
    shown |= {i.subscription: msgspec.to_builtins(i) for i in links.inboxes}
    for row in rows:
        if row["subscription"] in shown:
            row["link"] = shown[row["subscription"]]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if partitions:
        console.print(
            table(
                "partitions",
                {
                    "subscription": True,
                    "part": True,
                    "checkpoint": True,
                    "pending": True,
                    "oldest": True,
                    "owner": False,
                },
                [
                    [
                        s.name,
                        p.info.partition,
                        p.info.position,
                        p.pending,
                        _age(p.oldest_age),
                        p.owner,
                    ]
                    for s in states
                    for p in s.partitions
                ],
            )
        )
    else:
        console.print(
            table(
                "subscriptions",
                {
                    "subscription": True,
                    "state": True,
                    "pending": True,
                    "oldest": True,
                    "parked": True,
                    "waiting": True,
                    "workers": False,
                },
                [
                    [
                        r["subscription"],
                        r["state"],
                        r["pending"],
                        _age(r["oldest_age"]),
                        r["parked"],
                        r["waiting"],
                        ", ".join(r["workers"]) or None,
                    ]
                    for r in rows
                ],
            )
        )
    _print_links(links)
    if not states:
        console.print("no subscriptions yet: a worker creates them when it starts")
    for found in unhandled:
        console.print(
            f"[yellow]unhandled:[/yellow] {found.count} {found.kind}(s) of type {found.type}: "
            f"{found.reason}",
            highlight=False,
        )
    if app is None and states:
        console.print("(give --app to mark orphaned subscriptions and find unknown types)")


def _print_links(links: Links) -> None:
    if links.relays:
        columns = {"relay": True, "pending": True, "oldest": True, "confirmed": True}
        columns |= {"holder": False, "until": True}
        rows = [
            [r.subscription, r.pending, _age(r.oldest_age), r.position, r.holder, when(r.until)]
            for r in links.relays
        ]
        console.print(table("relays", columns, rows))
    if links.inboxes:
        columns = {"inbox": True, "holder": False, "until": True, "consumes": False}
        columns |= {"received": True, "last": True, "unreadable": True, "undecodable": True}
        rows = [
            [
                i.subscription,
                i.holder,
                when(i.until),
                ", ".join(i.consumes) or None,
                f"{i.received} ({i.commands} commands, {i.events} events)",
                when(i.last_received_at),
                i.unreadable,
                i.undecodable,
            ]
            for i in links.inboxes
        ]
        console.print(table("inboxes", columns, rows))
        if any(i.unreadable for i in links.inboxes):
            console.print(
                f"unreadable arrivals are kept in the stream {links.inboxes[0].unreadable_stream}"
                "; undecodable ones are dead letters (`tidings dlq list`)",
                highlight=False,
            )


def _state_row(s: SubscriptionState) -> dict[str, Any]:
    return {
        "subscription": s.name,
        "state": s.state,
        "types": s.types,
        "pending": s.pending,
        "oldest_age": s.oldest_age,
        "parked": s.parked,
        "waiting": s.waiting,
        "workers": s.workers,
        "partitions": [
            {
                "partition": p.info.partition,
                "checkpoint": p.info.position,
                "pending": p.pending,
                "oldest_age": p.oldest_age,
                "owner": p.owner,
            }
            for p in s.partitions
        ],
    }


def _unhandled_rows(found: list[Unhandled]) -> list[dict[str, Any]]:
    return [{"kind": u.kind, "type": u.type, "count": u.count, "reason": u.reason} for u in found]


@subscriptions.command("reset")
def subscriptions_reset(
    name: Annotated[str, typer.Argument(help="The subscription.")],
    store: StoreOption = None,
    app: AppOption = None,
    to_start: Annotated[
        bool, typer.Option("--to-start", help="Deliver everything in the log again.")
    ] = False,
    to_end: Annotated[
        bool, typer.Option("--to-end", help="Pass over everything recorded so far.")
    ] = False,
    to_position: Annotated[
        int | None, typer.Option("--to-position", help="Go on after this global position.")
    ] = None,
    force: ForceOption = False,
    actor: ActorOption = None,
) -> None:
    """Move a subscription's checkpoints; held messages beyond the new one are delivered again."""
    chosen = [to for to, given in (("start", to_start), ("end", to_end)) if given]
    if to_position is not None:
        chosen.append(str(to_position))
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --to-start, --to-end, --to-position N")
    target: int | str = to_position if to_position is not None else chosen[0]

    async def main() -> int:
        async with open_app(store, app) as opened:
            return await opened.subscriptions.reset(name, target, actor=actor, force=force)

    position = run(main)
    console.print(f"subscription {name} goes on after global position {position}")


@subscriptions.command("delete")
def subscriptions_delete(
    name: Annotated[str, typer.Argument(help="The subscription.")],
    store: StoreOption = None,
    app: AppOption = None,
    force: ForceOption = False,
    actor: ActorOption = None,
) -> None:
    """Forget a subscription (an orphan): its checkpoints and held messages."""

    async def main() -> None:
        async with open_app(store, app) as opened:
            await opened.subscriptions.delete(name, actor=actor, force=force)

    run(main)
    console.print(f"subscription {name} deleted")


# --- dead letters -------------------------------------------------------------------------


def _held_row(h: Any) -> dict[str, Any]:
    return {
        "id": h.id,
        "subscription": h.subscription,
        "stream": h.stream,
        "global_position": h.global_position,
        "message_id": h.message_id,
        "type": h.type,
        "status": h.status,
        "attempts": h.attempts,
        "error": h.error,
        "due_at": h.due_at,
        "first_failed_at": h.first_failed_at,
        "last_failed_at": h.last_failed_at,
    }


@dlq.command("list")
def dlq_list(
    store: StoreOption = None,
    app: AppOption = None,
    subscription: Annotated[str | None, typer.Option(help="Only this subscription.")] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every held message, not only dead ones.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Dead letters (or, with --all, every held message), oldest first, with their cause."""

    async def main() -> list[Any]:
        async with open_app(store, app) as opened:
            return await opened.dead_letters.list(
                subscription=subscription,
                stream=stream,
                status=None if every else "dead",
                limit=limit,
            )

    rows = [_held_row(h) for h in run(main)]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    columns = {"id": True, "subscription": True, "stream": True, "type": True}
    columns |= {"status": True} if every else {}
    columns |= {"tries": True, "error": False}
    console.print(
        table(
            "dead letters" if not every else "held messages",
            columns,
            [
                [r["id"], r["subscription"], r["stream"], r["type"]]
                + ([r["status"]] if every else [])
                + [r["attempts"], r["error"]]
                for r in rows
            ],
        )
    )
    if not rows:
        console.print("nothing is held")


@dlq.command("show")
def dlq_show(
    id: Annotated[int, typer.Argument(help="The dead letter's id (from `tidings dlq list`).")],
    store: StoreOption = None,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """One dead letter: the message, and every attempt with its time, error and traceback."""

    async def main() -> Any:
        async with open_app(store, app) as opened:
            return await opened.dead_letters.show(id)

    found = run(main)
    row = _held_row(found.held)
    row["waiting_behind"] = found.waiting
    row["history"] = [
        {"at": a.at, "error": a.error, "traceback": a.traceback} for a in found.held.history
    ]
    row["traceback"] = found.held.traceback
    row["data"] = payload(found.envelope.data) if found.envelope is not None else None
    if as_json:
        typer.echo(json.dumps(row))
        return
    for key in (
        "id",
        "subscription",
        "stream",
        "global_position",
        "message_id",
        "type",
        "status",
        "attempts",
        "error",
        "waiting_behind",
    ):
        console.print(f"[bold]{key}[/bold]: {row[key]}", highlight=False)
    console.print(f"[bold]data[/bold]: {json.dumps(row['data'])}", highlight=False)
    history = row["history"]
    if len(history) < found.held.attempts:
        console.print(f"(the last {len(history)} of {found.held.attempts} attempts are kept)")
    for number, attempt in enumerate(history, start=1):
        console.print(
            f"[bold]attempt {number}[/bold] at {when(attempt['at'])}: {attempt['error']}",
            highlight=False,
        )
        text = attempt["traceback"] or (row["traceback"] if number == len(history) else None)
        if text:
            console.print(text.rstrip(), markup=False, highlight=False)


def _selected(
    id: int | None, stream: str | None, subscription: str | None, error: str | None, every: bool
) -> str:
    given = [
        name
        for name, value in (("id", id), ("--stream", stream), ("--error", error))
        if value is not None
    ] + (["--all"] if every else [])
    if len(given) != 1:
        raise typer.BadParameter(
            "give one of: an id, --stream (with --subscription), --error, --all "
            "(--subscription narrows --error and --all)"
        )
    if stream is not None and subscription is None:
        raise typer.BadParameter("--stream needs --subscription")
    return given[0]


SubscriptionFilter = Annotated[
    str | None, typer.Option(help="The subscription (for --stream; narrows --error and --all).")
]
StreamFilter = Annotated[
    str | None, typer.Option(help="The head of this stream (with --subscription).")
]
ErrorFilter = Annotated[
    str | None, typer.Option(help="Every dead letter whose error starts with this.")
]
AllFilter = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


@dlq.command("retry")
def dlq_retry(
    id: Annotated[int | None, typer.Argument(help="The dead letter's id.")] = None,
    store: StoreOption = None,
    app: AppOption = None,
    stream: StreamFilter = None,
    subscription: SubscriptionFilter = None,
    error: ErrorFilter = None,
    every: AllFilter = False,
    actor: ActorOption = None,
) -> None:
    """Handle dead letters again; the messages waiting behind each follow in order (a worker
    running the subscription does it)."""
    how = _selected(id, stream, subscription, error, every)

    async def main() -> tuple[int, list[str]]:
        async with open_app(store, app) as opened:
            letters = opened.dead_letters
            if how == "id":
                assert id is not None
                subs = {(await letters.retry(id, actor=actor)).subscription}
                return 1, await opened.subscriptions.unattended(subs)
            if how == "--stream":
                assert stream is not None and subscription is not None
                count = await letters.retry_stream(subscription, stream, actor=actor)
                return count, await opened.subscriptions.unattended({subscription})
            rows = await letters.select(error=error, subscription=subscription)
            if how == "--error":
                assert error is not None
                count = await letters.retry_error(error, subscription=subscription, actor=actor)
            else:
                count = await letters.retry_all(subscription=subscription, actor=actor)
            return count, await opened.subscriptions.unattended({h.subscription for h in rows})

    count, idle = run(main)
    console.print(f"{count} dead letter(s) queued for retry", highlight=False)
    if count and idle:
        console.print(
            f"[yellow]no worker runs {', '.join(idle)} now:[/yellow] nothing is replayed until "
            "one does (`tidings worker module:app`); an orphaned subscription will never be "
            "run again: skip its dead letters or delete it",
            highlight=False,
        )
    elif count:
        console.print("a running worker replays them in order")


@dlq.command("skip")
def dlq_skip(
    id: Annotated[int | None, typer.Argument(help="The dead letter's id.")] = None,
    store: StoreOption = None,
    app: AppOption = None,
    subscription: SubscriptionFilter = None,
    error: ErrorFilter = None,
    every: AllFilter = False,
    actor: ActorOption = None,
) -> None:
    """Give up on dead letters; the messages waiting behind each are released, in order."""
    how = _selected(id, None, subscription, error, every)

    async def main() -> str:
        async with open_app(store, app) as opened:
            letters = opened.dead_letters
            if how == "id":
                assert id is not None
                held = await letters.skip(id, actor=actor)
                return f"skipped #{held.id} ({held.type} in {held.stream})"
            if how == "--error":
                assert error is not None
                count = await letters.skip_error(error, subscription=subscription, actor=actor)
            else:
                count = await letters.skip_all(subscription=subscription, actor=actor)
            return f"skipped {count} dead letter(s)"

    console.print(f"{run(main)}; messages behind them are released", highlight=False)
