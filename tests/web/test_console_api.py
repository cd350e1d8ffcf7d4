"""The console's JSON API against a real store (SQLite and PostgreSQL): dead letters by cause,
retry after a repair, edit and retry, operator actions, the token, and the OpenAPI document."""

from __future__ import annotations

import msgspec
import pytest
from _parked import TOKEN, parked_cinema, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Tidings-Operator": "ada"}


async def test_a_group_is_found_retried_and_gone(store_url: str) -> None:
    async with parked_cinema(store_url, guests=3) as parked:
        client, app = parked.client, parked.cinema.app
        causes = (await client.get("/api/dead-letters")).json()
        assert len(causes) == 1, causes
        cause = causes[0]
        assert cause["subscription"] == "email"
        assert cause["exception"] == "MailboxUnavailable"
        assert cause["message"] == "mailbox of guest<n> rejects mail (<n> mailbox unavailable)"
        assert cause["count"] == 3 and cause["frame"].endswith(":send")

        one = (await client.get(f"/api/dead-letters/{cause['ids'][0]}")).json()
        assert one["held"]["status"] == "dead"
        assert len(one["history"]) == 4
        assert all("MailboxUnavailable" in a["traceback"] for a in one["history"])
        assert one["envelope"]["type"] == "cinema.ReservationConfirmed"
        assert [c["type"] for c in one["chain"]][-2:] == [
            "cinema.ConfirmReservation",
            "cinema.ReservationConfirmed",
        ] or one["chain"][-1]["type"] == "cinema.ReservationConfirmed"
        assert (
            one["actions"][0]["values"]["reservation_id"]
            == one["envelope"]["data"]["reservation_id"]
        )

        refused = await client.post(f"/api/dead-letters/causes/{cause['key']}/retry")
        assert refused.status_code == 401
        assert len((await client.get("/api/dead-letters")).json()) == 1

        parked.cinema.email.repaired = True
        done = await client.post(f"/api/dead-letters/causes/{cause['key']}/retry", headers=AUTH)
        assert done.status_code == 200, done.text

        async def delivered() -> bool:
            return len(parked.cinema.email.sent) == 3

        await wait_for(delivered, 20, "the retried e-mails being delivered")
        await wait_for(
            lambda: _empty(client), 10, "the dead-letter group disappearing from the console"
        )
        audit = (await client.get("/api/audit")).json()
        assert [e["actor"] for e in audit if e["action"] == "dlq.retry-cause"] == ["ada"] * 3
        assert await app.dead_letters.list(status=None) == []


async def _empty(client: object) -> bool:
    return (await client.get("/api/dead-letters")).json() == []  # type: ignore[attr-defined]


async def test_counts_stay_right_as_new_failures_arrive(store_url: str) -> None:
    async with parked_cinema(store_url, guests=2) as parked:
        client, app = parked.client, parked.cinema.app
        assert [c["count"] for c in (await client.get("/api/dead-letters")).json()] == [2]
        from tidings.examples.cinema.messages import ReserveSeat

        await app.invoke(ReserveSeat(screening_id="2", seat="B1", guest="guest777"))

        async def three() -> bool:
            causes = (await client.get("/api/dead-letters")).json()
            return [c["count"] for c in causes] == [3]

        await wait_for(three, 30, "the new failure joining its group")


async def test_edit_and_retry_keeps_the_original(store_url: str) -> None:
    async with parked_cinema(store_url, guests=1) as parked:
        client, app, email = parked.client, parked.cinema.app, parked.cinema.email
        held = (await app.dead_letters.list(subscription="email"))[0]
        shown = (await client.get(f"/api/dead-letters/{held.id}")).json()
        original = shown["envelope"]["data"]
        bad = {**original, "seat": 12}
        refused = await client.post(
            f"/api/dead-letters/{held.id}/edit", json={"payload": bad}, headers=AUTH
        )
        assert refused.status_code == 400 and "Expected `str`" in refused.json()["error"]
        # A guest whose mailbox works: the edited payload reaches the e-mail handler alone.
        email.broken = lambda guest: guest != "guest-fixed"  # type: ignore[method-assign]
        edited = {**original, "guest": "guest-fixed"}
        done = await client.post(
            f"/api/dead-letters/{held.id}/edit", json={"payload": edited}, headers=AUTH
        )
        assert done.status_code == 200, done.text

        async def sent() -> bool:
            return any("guest-fixed" in text for text in email.sent.values())

        await wait_for(sent, 20, "the edited e-mail being sent")

        async def released() -> bool:
            return await app.dead_letters.list(status=None) == []

        await wait_for(released, 10, "the edited message's success being committed")
        log = await app.store.read_all(after=held.global_position - 1, limit=1)
        assert msgspec.json.decode(log[0].data) == original
        entry = (await client.get("/api/audit")).json()[0]
        assert entry["action"] == "dlq.edit-retry" and entry["actor"] == "ada"
        assert '"guest":"guest000"' in entry["detail"] and "guest-fixed" in entry["detail"]
        assert await app.store.get_document("$edits", f"email@{held.global_position}") is None


async def test_operator_action_issues_the_receipt(store_url: str) -> None:
    async with parked_cinema(store_url, guests=1) as parked:
        client, app = parked.client, parked.cinema.app
        actions = (await client.get("/api/actions")).json()
        assert [a["label"] for a in actions] == ["Issue the receipt again"]
        values = {"reservation_id": "r-lost", "guest": "bob", "amount_cents": 1250}
        refused = await client.post("/api/actions/IssueReceipt", json={"values": values})
        assert refused.status_code == 401
        assert await app.get("receipts", "r-lost") is None
        bad = await client.post(
            "/api/actions/IssueReceipt",
            json={"values": {**values, "amount_cents": "lots"}},
            headers=AUTH,
        )
        assert bad.status_code == 400
        done = await client.post("/api/actions/IssueReceipt", json={"values": values}, headers=AUTH)
        assert done.status_code == 200, done.text
        assert done.json()["result"] == "R-r-lost"
        assert (await app.get("receipts", "r-lost"))["guest"] == "bob"
        entry = (await client.get("/api/audit")).json()[0]
        assert (entry["actor"], entry["action"]) == ("ada", "action.IssueReceipt")
        assert "R-r-lost" in entry["detail"]


async def test_pause_and_resume(store_url: str) -> None:
    async with parked_cinema(store_url, guests=1) as parked:
        client = parked.client
        done = await client.post("/api/subscriptions/website/pause", headers=AUTH)
        assert done.status_code == 200, done.text

        async def paused() -> bool:
            subs = (await client.get("/api/subscriptions")).json()
            state = next(s for s in subs if s["name"] == "website")
            return state["state"] == "paused" and state["workers"] == []

        await wait_for(paused, 10, "the paused subscription's partitions being given up")
        await client.post("/api/subscriptions/website/resume", headers=AUTH)

        async def running() -> bool:
            subs = (await client.get("/api/subscriptions")).json()
            return next(s for s in subs if s["name"] == "website")["state"] == "running"

        await wait_for(running, 10, "the resumed subscription running again")
        missing = await client.post("/api/subscriptions/nope/pause", headers=AUTH)
        assert missing.status_code == 400


async def test_read_pages_and_messages(store_url: str) -> None:
    async with parked_cinema(store_url, guests=2) as parked:
        client = parked.client
        listing = (await client.get("/api/messages", params={"type": "cinema.SeatReserved"})).json()
        assert [r["type"] for r in listing["rows"]] == ["cinema.SeatReserved"] * 2
        first = listing["rows"][0]
        shown = (await client.get(f"/api/messages/{first['position']}")).json()
        assert shown["parent"] is None
        assert {c["type"] for c in shown["children"]} >= {"tidings.WorkflowStepped"} or shown[
            "children"
        ]
        flow = (await client.get(f"/api/correlations/{first['correlation_id']}")).json()
        types = {n["row"]["type"] for n in flow["nodes"]}
        assert {"cinema.ReservationConfirmed", "cinema.IssueReceipt"} <= types
        assert any(n["status"] == "dead" for n in flow["nodes"])
        assert flow["edges"]
        by_stream = (await client.get("/api/messages", params={"stream": "payment-"})).json()
        assert by_stream["rows"] and all(
            r["stream"].startswith("payment-") for r in by_stream["rows"]
        )
        outcomes = (await client.get("/api/outcomes")).json()
        assert dict(outcomes["counts"]).get("succeeded", 0) >= 2
        workflows = (await client.get("/api/workflows")).json()
        assert workflows[0]["name"] == "purchase" and len(workflows[0]["instances"]) == 2
        for page in (
            "/",
            "/dead-letters",
            "/messages",
            "/subscriptions",
            "/workflows",
            "/outcomes",
            "/audit",
            "/actions",
            f"/correlations/{first['correlation_id']}",
            f"/messages/{first['position']}",
        ):
            got = await client.get(page)
            assert got.status_code == 200, (page, got.text[:500])
            assert TOKEN not in got.text


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_openapi_document_is_valid(store_url: str) -> None:
    from openapi_spec_validator import validate

    async with parked_cinema(store_url, guests=1) as parked:
        document = (await parked.client.get("/api/openapi.json")).json()
        validate(document)
        assert document["openapi"] == "3.1.0"
        assert "/api/dead-letters/{id}/edit" in document["paths"]


async def test_the_console_serves_the_probes_and_the_metrics(store_url: str) -> None:
    async with parked_cinema(store_url, guests=2) as parked:
        client = parked.client
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = (await client.get("/readyz")).json()
        assert ready["checks"]["store"] == "ok", ready
        metrics = (await client.get("/metrics")).text
        dead = [
            line
            for line in metrics.splitlines()
            if line.startswith("tidings_dead_letters{") and 'subscription="email"' in line
        ]
        assert dead and dead[0].endswith(" 2.0"), metrics
