"""What the console shows, read from an App's store: overview, dead letters by cause, a held
message with its attempts and what waits behind it, workflows, the audit trail, recent alerts."""

from __future__ import annotations

from typing import Any

import msgspec

from tidings.app import App
from tidings.delivery.marks import EDITS, PAUSED
from tidings.delivery.subscriptions import Subscriptions
from tidings.errors import DeadLetterNotFound
from tidings.messages import Envelope
from tidings.ops.alerts import recent_alerts as stored_alerts
from tidings.ops.links import Links, link_states
from tidings.records import DEAD, WAITING, Held
from tidings.store import Store
from tidings.web.causes import Cause, group

#: How many dead letters the grouping reads at most (each page states when it hit this).
MAX_GROUPED = 100_000


class RecentAlert(msgspec.Struct, frozen=True):
    """An alert as the console's banner shows it."""

    kind: str
    subscription: str
    type: str
    stream: str
    error: str
    at: float | None
    link: str


async def recent_alerts(store: Store, limit: int = 10) -> list[RecentAlert]:
    """The newest alerts: the dead letters waiting now (a dead sent command is one of
    ``cmd:<type>``), and the alerts about lag and lost workers that workers stored
    (``tidings.ops.alerts``), newest first."""
    dead = await store.held_summaries(status=DEAD, limit=MAX_GROUPED)
    stored = [
        RecentAlert(a.kind, a.subscription, a.type, a.stream, a.error, a.at, "/subscriptions")
        for a in await stored_alerts(store, limit=limit)
        if a.kind not in ("message-parked", "command-dead")  # those are the dead letters above
    ]
    return sorted([*stored, *_dead_alerts(dead)], key=lambda a: a.at or 0.0, reverse=True)[:limit]


def _dead_alerts(dead: list[Held]) -> list[RecentAlert]:
    return [
        RecentAlert(
            "command-dead" if h.subscription.startswith("cmd:") else "message-parked",
            h.subscription,
            h.type,
            h.stream,
            h.error or "",
            h.last_failed_at,
            f"/dead-letters/{h.id}",
        )
        for h in dead
    ]


def payload_text(data: bytes) -> str:
    """A stored payload as indented JSON (as text when it is not JSON)."""
    try:
        return msgspec.json.format(bytes(data), indent=2).decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        return bytes(data).decode("utf-8", "replace")


def message(app: App, env: Envelope) -> Any:
    """The decoded message of ``env`` (``None`` when it does not decode)."""
    try:
        return app.decode(env).message
    except Exception:  # a type no class knows, or a payload that does not decode
        return None


class Console:
    """The read side of the console over one App."""

    def __init__(self, app: App, *, judge: bool = True) -> None:
        self.app = app
        self.store = app.store
        # Only an application's own handlers can tell an orphaned subscription (not a bare store).
        self.subscriptions = Subscriptions(
            app.store, app.handlers, app.services, app.open, judge=judge
        )
        self._tail_cache: dict[tuple[int, float | None], str] = {}

    async def overview(self) -> dict[str, Any]:
        subs = await self.subscriptions.list()
        paused = await self.paused()
        now = await self.store.now()
        last = await self.store.last_position()
        recent = await self.store.read_all(after=max(0, last - 1000), limit=1000)
        minute = sum(1 for env in recent if env.recorded_at >= now - 60)
        workers = sorted({w for s in subs for w in s.workers})
        counts = await self.store.held_counts()
        return {
            "subscriptions": [
                {
                    "name": s.name,
                    "state": "paused" if s.name in paused else s.state,
                    "pending": s.pending,
                    "lag_seconds": s.oldest_age,
                    "parked": s.parked,
                    "waiting": s.waiting,
                    "workers": s.workers,
                    "partitions": len(s.partitions),
                    "positions": sorted({p.info.position for p in s.partitions}),
                }
                for s in subs
            ],
            "dead": sum(n for _, status, n in counts if status == DEAD),
            "held": sum(n for _, _, n in counts),
            "workers": workers,
            "last_position": last,
            "per_minute": minute,
            "alerts": [msgspec.to_builtins(a) for a in await recent_alerts(self.store)],
            **msgspec.to_builtins(await link_states(self.store, subs, self.app)),
        }

    async def links(self) -> Links:
        """The relays and the inboxes: lag, holders, what the inboxes recorded."""
        return await link_states(self.store, await self.subscriptions.list(), self.app)

    async def paused(self) -> set[str]:
        return {key for key, _ in await self.store.documents(PAUSED, limit=10_000)}

    async def _tails(self, rows: list[Held]) -> dict[int, str]:
        """The traceback tails of ``rows``, read once per failure (cached by id and time)."""
        missing = [h.id for h in rows if (h.id, h.last_failed_at) not in self._tail_cache]
        if missing:
            if len(self._tail_cache) > 4 * MAX_GROUPED:
                self._tail_cache.clear()
            at = {h.id: h.last_failed_at for h in rows}
            for id, tail in (await self.store.held_tails(missing)).items():
                self._tail_cache[(id, at[id])] = tail
        return {h.id: self._tail_cache.get((h.id, h.last_failed_at), "") for h in rows}

    async def causes(self, subscription: str | None = None) -> list[Cause]:
        rows = await self.store.held_summaries(
            subscription=subscription, status=DEAD, limit=MAX_GROUPED
        )
        return group(rows, await self._tails(rows))

    async def cause(self, key: str) -> tuple[Cause, list[Held]]:
        """A cause and its dead letters (as summaries: no traceback, no history)."""
        rows = await self.store.held_summaries(status=DEAD, limit=MAX_GROUPED)
        for found in group(rows, await self._tails(rows)):
            if found.key == key:
                ids = set(found.ids)
                return found, [h for h in rows if h.id in ids]
        raise DeadLetterNotFound(
            f"no dead letters with cause {key!r} (they were retried or skipped); see /dead-letters"
        )

    async def dead_letter(self, id: int) -> dict[str, Any]:
        shown = await self.app.dead_letters.show(id)
        held = shown.held
        env = shown.envelope
        behind = [
            h
            for h in await self.store.held(
                subscription=held.subscription, stream=held.stream, limit=1000
            )
            if h.global_position > held.global_position and h.status == WAITING
        ]
        decoded = message(self.app, env) if env is not None else None
        edit = await self.store.get_document(EDITS, f"{held.subscription}@{held.global_position}")
        return {
            "held": held,
            "envelope": env,
            "payload": payload_text(env.data) if env is not None else "",
            "headers": env.headers if env is not None else {},
            "history": held.history,
            "waiting": shown.waiting,
            "behind": behind,
            "actions": self.app.operator_actions.applicable(decoded) if decoded else [],
            "edited": payload_text(msgspec.json.decode(edit)["data"].encode()) if edit else None,
            "schema": _schema_of(self.app, env.type) if env is not None else None,
        }

    async def workflows(self) -> list[dict[str, Any]]:
        names = sorted(
            s.removeprefix("workflow:")
            for s in self.app.handlers.subscribers
            if s.startswith("workflow:")
        )
        found = []
        for name in names:
            rows = await self.store.documents(f"workflow:{name}", limit=1000)
            instances = []
            for key, data in rows:
                doc = msgspec.json.decode(data)
                instances.append(
                    {
                        "key": key,
                        "done": bool(doc.get("done")),
                        "state": doc.get("state"),
                        "timeouts": sorted((doc.get("timeouts") or {}).keys()),
                    }
                )
            found.append({"name": name, "instances": instances})
        return found

    async def audit(self, limit: int = 200) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(e) for e in await self.store.audit_entries(limit=limit)]


def _schema_of(app: App, type_name: str) -> dict[str, Any] | None:
    try:
        cls = app.registry.resolve(type_name)
    except Exception:
        return None
    schema: dict[str, Any] = msgspec.json.schema(cls)
    return schema
