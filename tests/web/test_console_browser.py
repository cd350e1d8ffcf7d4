"""A scripted operator in a real browser (Playwright driving Debian's Chromium): the parked
e-mails' group is found, a traceback read, the provider repaired, the group retried and gone; the
"issue the receipt again" action run; a change without the token refused; the map opened.
Screenshots of the main pages are saved under tests/artifacts/ (not committed)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from _parked import TOKEN, parked_cinema, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test needs Chromium in CI: {reason}")
        pytest.skip(reason)


@asynccontextmanager
async def serving(site: object) -> AsyncIterator[str]:
    """Serve ``site`` with uvicorn on a free loopback port in this event loop."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(site, host="127.0.0.1", port=0, log_level="warning"))  # type: ignore[arg-type]
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, 10, "the console starting")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_an_operator_repairs_the_parked_emails(tmp_path: Path) -> None:
    _need_chromium()
    from playwright.async_api import async_playwright, expect

    from tidings.web import create_console

    ARTIFACTS.mkdir(exist_ok=True)
    async with parked_cinema(f"sqlite:///{tmp_path / 'cinema.db'}", guests=3) as parked:
        cinema = parked.cinema
        site = create_console(cinema.app, token=TOKEN, manage=False)
        async with serving(site) as url, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                # The overview counts the dead letters.
                await page.goto(url + "/")
                await expect(page.locator("#dead-count")).to_have_text("3")
                await page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)

                # The group: one cause, three e-mails.
                await page.get_by_role("link", name="Dead letters").click()
                group = page.locator("tr.cause")
                await expect(group).to_have_count(1)
                await expect(group.locator(".count")).to_have_text("3")
                await expect(group).to_contain_text("MailboxUnavailable")
                await page.screenshot(path=ARTIFACTS / "dead-letters.png", full_page=True)

                # A message of the group and its traceback.
                await group.get_by_role("link").first.click()
                await page.locator("a", has_text=re.compile(r"^#\d+$")).first.click()
                traceback = page.locator("details.attempt[open] pre.traceback")
                await expect(traceback).to_contain_text("Traceback (most recent call last)")
                await expect(traceback).to_contain_text("MailboxUnavailable: mailbox of guest")
                await expect(page.locator("#payload")).to_contain_text("reservation_id")
                await page.screenshot(path=ARTIFACTS / "dead-letter.png", full_page=True)

                # A change without the token is refused, and nothing changes.
                await page.get_by_role("button", name="Retry", exact=True).click()
                await expect(page.locator("#refused")).to_contain_text(
                    "sign in with the console token"
                )
                assert len(await cinema.app.dead_letters.list(subscription="email")) == 3

                # Sign in with the token.
                await page.goto(url + "/login")
                await page.fill("#operator", "ada")
                await page.fill("#token", TOKEN)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator("header")).to_contain_text("signed in as ada")
                assert TOKEN not in await page.content()

                # The provider is repaired; the group is retried; the e-mails go out.
                cinema.email.repaired = True
                await page.goto(url + "/dead-letters")
                await page.get_by_role("button", name="Retry group").click()
                await expect(page.locator(".notice")).to_contain_text("will be retried")

                async def delivered() -> bool:
                    return len(cinema.email.sent) == 3

                await wait_for(delivered, 20, "the e-mails being delivered")

                async def gone() -> bool:
                    await page.goto(url + "/dead-letters")
                    return await page.locator("#no-dead-letters").count() == 1

                await wait_for(gone, 10, "the group leaving the console")

                # Issue the receipt again, from a reservation's confirmation.
                await page.goto(url + "/messages?type=cinema.ReservationConfirmed")
                await page.locator("td.num a").first.click()
                await page.get_by_role("button", name="Issue the receipt again").click()
                reservation = await page.input_value("#f-reservation_id")
                assert reservation
                await page.screenshot(path=ARTIFACTS / "operator-action.png", full_page=True)
                await page.get_by_role("button", name="Issue the receipt again").click()
                await expect(page.locator(".notice")).to_contain_text(f"done, R-{reservation}")

                # The audit trail names the operator.
                await page.get_by_role("link", name="Audit trail").click()
                rows = page.locator("tr.audit")
                await expect(rows.first).to_contain_text("ada")
                await expect(rows.first).to_contain_text("action.IssueReceipt")
                await page.screenshot(path=ARTIFACTS / "audit.png", full_page=True)

                # The other main pages, for a person to look at.
                for name in ("subscriptions", "workflows", "outcomes", "messages"):
                    await page.goto(f"{url}/{name}")
                    await expect(page.locator("h1")).to_be_visible()
                    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)

                # The flow of one purchase, drawn.
                await page.goto(url + "/messages?type=cinema.SeatReserved")
                await page.locator("td a[href^='/correlations/']").first.click()
                await expect(page.locator("svg[aria-label='message flow'] rect")).not_to_have_count(
                    0
                )
                await page.screenshot(path=ARTIFACTS / "flow.png", full_page=True)

                # The map and the advisor's findings.
                await page.get_by_role("link", name="Map").click()
                await expect(page.locator("#findings-info")).to_contain_text("TD003")
                nodes = page.locator("svg.topology-map g.node")
                await expect(nodes.filter(has_text="ReserveSeat")).to_have_count(1)
                await expect(page.locator("svg.topology-map g.edge")).not_to_have_count(0)
                await page.screenshot(path=ARTIFACTS / "map.png", full_page=True)
            finally:
                await browser.close()
