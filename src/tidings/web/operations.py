"""The console's changes, shared by its pages and its JSON API; each one is audited with the
operator who made it."""

from __future__ import annotations

from typing import Any

import msgspec

from tidings.app import App
from tidings.delivery.marks import EDITS, PAUSED, edit_key
from tidings.errors import Refused, TidingsError
from tidings.records import DEAD, REPLAY, RETRYING, AuditEntry, DocumentWrite, Transaction
from tidings.web.data import MAX_GROUPED, Console
from tidings.web.forms import FormError, build, decode, values


class Done(msgspec.Struct, frozen=True):
    """What a change did, in a sentence; ``ok`` is false for a refused operator action."""

    message: str
    ok: bool = True
    result: Any = None


class Operations:
    """The changes an operator makes through the console."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.console = Console(app)

    async def retry(self, id: int, operator: str) -> Done:
        held = await self.app.dead_letters.retry(id, actor=operator)
        return Done(f"#{held.id} will be retried (and whatever waits behind it in {held.stream})")

    async def skip(self, id: int, operator: str) -> Done:
        held = await self.app.dead_letters.skip(id, actor=operator)
        return Done(f"#{held.id} skipped; what waited behind it is released")

    async def _whole(self, key: str) -> tuple[Any, list[Any]]:
        """A cause and its dead letters read whole (the summaries must not be written back)."""
        cause, summaries = await self.console.cause(key)
        ids = {h.id for h in summaries}
        rows = await self.app.store.held(
            subscription=cause.subscription, status=DEAD, limit=MAX_GROUPED
        )
        return cause, [h for h in rows if h.id in ids]

    async def retry_cause(self, key: str, operator: str) -> Done:
        cause, rows = await self._whole(key)
        await self.app.dead_letters.retry_held(
            rows, "dlq.retry-cause", operator, f"cause {cause.key}"
        )
        return Done(f"{len(rows)} dead letter(s) of {cause.exception} will be retried")

    async def skip_cause(self, key: str, operator: str) -> Done:
        cause, rows = await self._whole(key)
        await self.app.dead_letters.skip_held(
            rows, "dlq.skip-cause", operator, f"cause {cause.key}"
        )
        return Done(f"{len(rows)} dead letter(s) of {cause.exception} skipped")

    async def edit_retry(self, id: int, text: str, operator: str) -> Done:
        """Retry a dead letter with an edited payload: checked against the message's class; the
        log keeps the original, this subscription's replay alone gets the edit (``$edits``), and
        the audit trail keeps both."""
        shown = await self.app.dead_letters.show(id)
        held, env = shown.held, shown.envelope
        if env is None:
            raise TidingsError(f"#{id}: its message is missing from the log; skip it instead")
        if held.status not in (DEAD, RETRYING):
            raise TidingsError(f"#{id} is {held.status}: only a failed message can be edited")
        cls = self.app.registry.resolve(env.type)
        edited = msgspec.json.encode(decode(cls, text))
        document = {"data": edited.decode(), "actor": operator, "original": env.data.decode()}
        tx = Transaction(
            held=[msgspec.structs.replace(held, status=REPLAY, due_in=None, due_at=None)],
            documents=[DocumentWrite(EDITS, edit_key(held), msgspec.json.encode(document))],
            audit=[
                AuditEntry(
                    operator,
                    "dlq.edit-retry",
                    f"{held.subscription}#{held.global_position}",
                    f"#{held.id} {held.type} {held.message_id}: original {env.data.decode()} "
                    f"edited {edited.decode()}",
                )
            ],
        )
        await self.app.committer.commit(tx)
        return Done(f"#{id} will be retried with the edited payload (the log keeps the original)")

    async def run_action(self, name: str, form: dict[str, Any], operator: str) -> Done:
        """Run an operator action from form values (strings) or JSON values."""
        action = self.app.operator_actions.get(name)
        if action is None:
            raise TidingsError(f"no operator action {name!r}; see /actions")
        given = values(action.schema(), form) if _strings(form) else form
        command = build(action.command, given)
        detail = msgspec.json.encode(command).decode()
        try:
            if action.mode == "send":
                ticket = await self.app.send(command)
                done = Done(f"{action.label}: sent as {ticket.message_id}", True, ticket.message_id)
            else:
                result = await self.app.invoke(command)
                done = Done(f"{action.label}: done, {result}", True, _jsonable(result))
        except Refused as exc:
            done = Done(f"{action.label}: refused: {exc.reason}", False)
        await self.app.committer.commit(
            Transaction(
                audit=[
                    AuditEntry(
                        operator,
                        f"action.{name}",
                        action.command.__name__,
                        f"{detail} → {done.message}",
                    )
                ]
            )
        )
        return done

    async def pause(self, subscription: str, operator: str) -> Done:
        await self._known(subscription)
        await self.app.committer.commit(
            Transaction(
                documents=[DocumentWrite(PAUSED, subscription, b'{"paused":true}')],
                audit=[AuditEntry(operator, "subscription.pause", subscription, "")],
            )
        )
        return Done(f"{subscription} paused: its workers give up its partitions")

    async def resume(self, subscription: str, operator: str) -> Done:
        await self._known(subscription)
        await self.app.committer.commit(
            Transaction(
                documents=[DocumentWrite(PAUSED, subscription, None)],
                audit=[AuditEntry(operator, "subscription.resume", subscription, "")],
            )
        )
        return Done(f"{subscription} resumed")

    async def reset(self, subscription: str, to: str, operator: str) -> Done:
        target: int | str = int(to) if to.strip().isdigit() else to.strip()
        position = await self.app.subscriptions.reset(subscription, target, actor=operator)
        return Done(f"{subscription} reset to position {position}")

    async def _known(self, subscription: str) -> None:
        if not await self.app.store.partitions(subscription):
            raise TidingsError(f"no subscription {subscription!r}; see /subscriptions")


def _strings(form: dict[str, Any]) -> bool:
    return all(isinstance(v, str) for v in form.values())


def _jsonable(value: Any) -> Any:
    try:
        return msgspec.to_builtins(value)
    except TypeError:
        return repr(value)


__all__ = ["Done", "FormError", "Operations"]
