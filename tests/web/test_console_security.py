"""Who may change what: read-only without a token, the session and its CSRF check, the token
never shown, payloads escaped. On a real SQLite store."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tidings import App, Event
from tidings.web import create_console

TOKEN = "tok-9f2c"


class Noted(Event):
    text: str


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:400]
    return found.group(1)


async def _client(app: App, token: str | None) -> httpx.AsyncClient:
    site = create_console(app, token=token, manage=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=site), base_url="http://console")


async def test_a_browser_signs_in_and_its_forms_carry_the_csrf_value(tmp_path: Path) -> None:
    app = App("sec", store=f"sqlite:///{tmp_path / 's.db'}")
    await app.publish(Noted(text="x"), stream="notes")
    async with app:
        await app.store.setup_subscription("notes-view", 1, 0)
        async with await _client(app, TOKEN) as http:
            page = (await http.get("/subscriptions")).text
            csrf = _csrf(page)
            # Not signed in: refused, nothing changes.
            refused = await http.post(
                "/subscriptions/notes-view/pause", data={"csrf": csrf, "back": "/"}
            )
            assert refused.status_code == 401 and "sign in" in refused.text
            assert await app.store.get_document("$paused", "notes-view") is None
            # A wrong token does not sign in.
            login = (await http.get("/login")).text
            wrong = await http.post(
                "/login", data={"operator": "eve", "token": "guess", "csrf": _csrf(login)}
            )
            assert wrong.status_code == 401
            done = await http.post(
                "/login", data={"operator": "ada", "token": TOKEN, "csrf": _csrf(login)}
            )
            assert done.status_code == 303
            assert TOKEN not in str(http.cookies.get("tidings_session"))
            # Signed in, but a form without the CSRF value (another site's) is refused.
            forged = await http.post("/subscriptions/notes-view/pause", data={"csrf": "other"})
            assert forged.status_code == 403 and "CSRF" in forged.text
            assert await app.store.get_document("$paused", "notes-view") is None
            paused = await http.post(
                "/subscriptions/notes-view/pause", data={"csrf": csrf, "back": "/subscriptions"}
            )
            assert paused.status_code == 303 and "paused" in paused.headers["location"]
            assert await app.store.get_document("$paused", "notes-view") is not None
            entry = (await app.store.audit_entries(limit=1))[0]
            assert (entry.actor, entry.action) == ("ada", "subscription.pause")
            # A forged session cookie (another name, same signature) is nobody.
            value = str(http.cookies.get("tidings_session")).strip('"')
            http.cookies.set("tidings_session", "mallory" + value[value.index("|") :])
            again = await http.post("/subscriptions/notes-view/resume", data={"csrf": csrf})
            assert again.status_code == 401
            for page_path in ("/", "/subscriptions", "/audit", "/login"):
                assert TOKEN not in (await http.get(page_path)).text


async def test_without_a_token_the_console_is_read_only(tmp_path: Path) -> None:
    app = App("ro", store=f"sqlite:///{tmp_path / 'r.db'}")
    async with app:
        await app.store.setup_subscription("view", 1, 0)
        async with await _client(app, None) as http:
            assert "read-only" in (await http.get("/")).text
            api = await http.post(
                "/api/subscriptions/view/pause", headers={"Authorization": "Bearer anything"}
            )
            assert api.status_code == 403 and "read-only" in api.json()["error"]
            login = (await http.get("/login")).text
            assert "read-only" in login


async def test_payloads_are_rendered_escaped(tmp_path: Path) -> None:
    app = App("xss", store=f"sqlite:///{tmp_path / 'x.db'}")
    async with app:
        await app.publish(Noted(text="<script>alert(1)</script>"), stream="<b>notes</b>")
        async with await _client(app, TOKEN) as http:
            for path in ("/messages/1", "/messages", "/messages?stream=%3Cb%3E"):
                page = (await http.get(path)).text
                assert "<script>alert(1)</script>" not in page
                assert "<b>notes</b>" not in page
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (await http.get("/messages/1")).text
