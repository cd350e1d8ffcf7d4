"""The message browser: the log and streams with filters, a message with its causes and effects,
a correlation id's flow laid out as a diagram, and sent commands' outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tidings.app import App
from tidings.delivery.subscriptions import routes_of
from tidings.messages import Envelope
from tidings.records import Outcome
from tidings.web.data import message, payload_text

PAGE = 50
#: Rows a filtered listing reads at most per page (it says so when it stopped there).
SCAN = 20_000
BOX_W, BOX_H, GAP_X, GAP_Y = 260, 52, 50, 16


def parse_time(text: str) -> float | None:
    """``YYYY-MM-DD[THH:MM[:SS]]`` (UTC) as epoch seconds; ``None`` when empty."""
    if not text.strip():
        return None
    try:
        found = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"time {text!r}: write it as 2026-12-05T09:30 (UTC)") from exc
    if found.tzinfo is None:
        found = found.replace(tzinfo=UTC)
    return found.timestamp()


class Browser:
    """Reads for the message pages of one App."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store

    async def at(self, position: int) -> Envelope | None:
        found = await self.store.read_all(after=position - 1, limit=1)
        return found[0] if found and found[0].global_position == position else None

    async def decoded(self, position: int) -> Any:
        env = await self.at(position)
        return message(self.app, env) if env is not None else None

    async def _position_at(self, at: float) -> int:
        """The last global position recorded before ``at`` (binary search: recorded times grow
        with positions)."""
        low, high = 0, await self.store.last_position()
        while low < high:
            mid = (low + high + 1) // 2
            env = await self.at(mid)
            if env is not None and env.recorded_at < at:
                low = mid
            else:
                high = mid - 1
        return low

    async def browse(self, query: dict[str, str]) -> dict[str, Any]:
        """Messages matching the filters (``type``, ``stream`` prefix, ``correlation``, ``since``
        and ``until`` times, ``after`` a position), at most a page."""
        kind = query.get("type", "").strip()
        prefix = query.get("stream", "").strip()
        correlation = query.get("correlation", "").strip()
        error = ""
        try:
            since, until = parse_time(query.get("since", "")), parse_time(query.get("until", ""))
        except ValueError as exc:
            since = until = None
            error = str(exc)
        last = await self.store.last_position()
        after_text = query.get("after", "").strip()
        filtered = bool(kind or prefix or correlation or since or until)
        if after_text.isdigit():
            after = int(after_text)
        elif since is not None:
            after = await self._position_at(since)
        else:
            after = 0 if filtered else max(0, last - PAGE)
        if correlation:
            rows = [
                e
                for e in await self.store.find(correlation_id=correlation, limit=1000)
                if e.global_position > after
            ]
            scanned_to = last
        else:
            rows, scanned_to = [], after
            while len(rows) < PAGE and scanned_to < last and scanned_to - after < SCAN:
                page = await self.store.read_all(
                    after=scanned_to, types=[kind] if kind else None, limit=1000
                )
                if not page:
                    scanned_to = last
                    break
                rows += page
                scanned_to = page[-1].global_position
                rows = [e for e in rows if _matches(e, prefix, since, until)]
                if until is not None and page[-1].recorded_at > until:
                    break
        rows = [e for e in rows if _matches(e, prefix, since, until)][:PAGE]
        more = rows[-1].global_position if len(rows) == PAGE else None
        if more is None and scanned_to < last and not (until and rows):
            more = scanned_to
        return {
            "rows": [_row(e) for e in rows],
            "next": more,
            "last": last,
            "error": error,
            "streams": await self.store.streams(prefix=prefix, limit=50) if prefix else [],
        }

    async def message(self, position: int) -> dict[str, Any] | None:
        env = await self.at(position)
        if env is None:
            return None
        parent = (
            await self.store.find(ids=[env.causation_id], limit=1)
            if env.causation_id and env.causation_id != env.id
            else []
        )
        children = await self.store.find(causation_id=env.id, limit=200)
        decoded = message(self.app, env)
        return {
            "env": env,
            "row": _row(env),
            "payload": payload_text(env.data),
            "headers": env.headers,
            "parent": _row(parent[0]) if parent else None,
            "children": [_row(c) for c in children if c.id != env.id],
            "chain": await self.chain(env),
            "actions": self.app.operator_actions.applicable(decoded) if decoded else [],
            "outcome": await self.store.outcome(env.id) if env.kind == "command" else None,
        }

    async def chain(self, env: Envelope) -> list[dict[str, Any]]:
        """The causation chain up to ``env``: its first cause first (at most 50 steps)."""
        chain = [env]
        while len(chain) < 50:
            cause = chain[-1].causation_id
            if not cause or cause == chain[-1].id:
                break
            found = await self.store.find(ids=[cause], limit=1)
            if not found:
                break
            chain.append(found[0])
        return [_row(e) for e in reversed(chain)]

    async def flow(self, correlation_id: str) -> dict[str, Any]:
        """Every message of a correlation id, which caused which, who handles each and how it
        went, laid out left to right by depth."""
        envs = await self.store.find(correlation_id=correlation_id, limit=500)
        by_id = {e.id: e for e in envs}
        depth: dict[str, int] = {}

        def depth_of(e: Envelope) -> int:
            seen = 0
            cursor: Envelope | None = e
            while cursor is not None and seen < 100:
                parent = cursor.causation_id
                if not parent or parent == cursor.id or parent not in by_id:
                    break
                cursor = by_id[parent]
                seen += 1
            return seen

        handlers: dict[str, list[str]] = {}
        for route in routes_of(self.app.handlers):
            for t in route.types:
                handlers.setdefault(t, []).append(route.name)
        dead = {
            h.message_id: h
            for stream in sorted({e.stream for e in envs})
            for h in await self.store.held(stream=stream, limit=1000)
            if h.message_id in by_id
        }
        nodes: list[dict[str, Any]] = []
        rows_at: dict[int, int] = {}
        for e in envs:
            d = depth_of(e)
            depth[e.id] = d
            row = rows_at.get(d, 0)
            rows_at[d] = row + 1
            outcome: Outcome | None = (
                await self.store.outcome(e.id) if e.kind == "command" else None
            )
            held = dead.get(e.id)
            status = held.status if held else (outcome.status if outcome else "recorded")
            nodes.append(
                {
                    "row": _row(e),
                    "x": 10 + d * (BOX_W + GAP_X),
                    "y": 10 + row * (BOX_H + GAP_Y),
                    "handlers": handlers.get(e.type, []),
                    "status": status,
                    "held_id": held.id if held else None,
                }
            )
        at = {n["row"]["id"]: n for n in nodes}
        edges = [
            {
                "x1": at[e.causation_id]["x"] + BOX_W,
                "y1": at[e.causation_id]["y"] + BOX_H / 2,
                "x2": at[e.id]["x"],
                "y2": at[e.id]["y"] + BOX_H / 2,
            }
            for e in envs
            if e.causation_id in at and e.causation_id != e.id
        ]
        width = 20 + (max(depth.values(), default=0) + 1) * (BOX_W + GAP_X)
        height = 20 + max(rows_at.values(), default=1) * (BOX_H + GAP_Y)
        return {
            "id": correlation_id,
            "nodes": nodes,
            "edges": edges,
            "width": width,
            "height": height,
            "box_w": BOX_W,
            "box_h": BOX_H,
        }

    async def outcomes(self, status: str | None = None) -> dict[str, Any]:
        rows = await self.store.outcomes(status=status, limit=200)
        dead = {
            h.message_id: h.id
            for kind in sorted({o.type for o in rows if o.status == "dead"})
            for h in await self.store.held_summaries(subscription=f"cmd:{kind}", status="dead")
        }
        return {
            "counts": await self.store.outcome_counts(),
            "rows": [
                {
                    "id": o.message_id,
                    "type": o.type,
                    "status": o.status,
                    "reason": o.reason or o.error or "",
                    "attempts": o.attempts,
                    "at": o.updated_at,
                    "dead_letter": dead.get(o.message_id),
                }
                for o in rows
            ],
        }


def _matches(e: Envelope, prefix: str, since: float | None, until: float | None) -> bool:
    return (
        e.stream.startswith(prefix)
        and (since is None or e.recorded_at >= since)
        and (until is None or e.recorded_at <= until)
    )


def _row(e: Envelope) -> dict[str, Any]:
    return {
        "position": e.global_position,
        "stream": e.stream,
        "stream_position": e.stream_position,
        "id": e.id,
        "kind": e.kind,
        "type": e.type,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "recorded_at": e.recorded_at,
        "short": e.type.rsplit(".", 1)[-1],
    }
