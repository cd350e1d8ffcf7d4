"""The operator's command line, started as a user starts it (a subprocess), on a shop whose
e-mail subscriber fails: it tells the truth about what is missing, what waits and what it did."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SHOP = textwrap.dedent(
    """
    from tidings import App, Command, Context, Event
    from tidings.delivery.policy import RetryPolicy

    class OrderShipped(Event, type_name="shop.OrderShipped"):
        order: str

    class ChargeCard(Command, type_name="shop.ChargeCard"):
        order: str

    app = App("shop", store="sqlite:///shop.db")

    @app.subscriber("email-confirmations", policy=RetryPolicy(max_attempts=3, immediate=2))
    def email(event: OrderShipped, ctx: Context) -> None:
        raise LookupError(f"no address for {event.order}")

    @app.command
    def charge(cmd: ChargeCard, ctx: Context) -> str:
        return "charged"
    """
)

FILL = textwrap.dedent(
    """
    import asyncio
    from shop import app, ChargeCard, OrderShipped

    async def main():
        async with app:
            for n in range(3):
                await app.publish(OrderShipped(order=f"o{n}"), stream=f"order-o{n}")
            await app.publish(OrderShipped(order="o0-again"), stream="order-o0")
            await app.send(ChargeCard(order="o1"))
            await app.worker().drain()
            await app.publish(OrderShipped(order="late"), stream="order-late")

    asyncio.run(main())
    """
)


# The commands run in the shop's directory: the paths Python searches are made absolute first.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ),
}


def tidings(
    cwd: Path, *args: str, columns: int = 200, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**ENV, "COLUMNS": str(columns), **(env or {})},
    )


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with shop.py and shop.db: three dead letters (one with a message waiting
    behind it), one message not delivered yet, one sent command handled."""
    where = tmp_path_factory.mktemp("shop")
    (where / "shop.py").write_text(SHOP)
    done = subprocess.run(
        [sys.executable, "-c", FILL], cwd=where, capture_output=True, text=True, timeout=60, env=ENV
    )
    assert done.returncode == 0, done.stderr
    return where


@pytest.fixture
def shop(filled: Path, tmp_path: Path) -> Path:
    """A copy of the filled shop a test may change."""
    for name in ("shop.py", "shop.db"):
        shutil.copy(filled / name, tmp_path / name)
    return tmp_path


STORE = ("--store", "sqlite:///shop.db")


# --- item 7: the CLI tells the truth ---------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["streams"], ["show", "order-o0"], ["subscriptions"], ["dlq", "list"], ["audit"]]
)
def test_a_reader_never_creates_a_database_file(tmp_path: Path, command: list[str]) -> None:
    done = tidings(tmp_path, *command, "--store", "sqlite:///typo.db")
    assert done.returncode == 1
    assert f"no SQLite file '{tmp_path / 'typo.db'}'" in " ".join(done.stdout.split())
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_named_and_the_url_forms_explained(tmp_path: Path) -> None:
    done = tidings(tmp_path, "streams", "--store", "sqlite:///nodir/app.db")
    text = " ".join(done.stdout.split())
    assert done.returncode == 1
    assert f"the directory '{tmp_path / 'nodir'}' does not exist" in text
    assert "sqlite:///relative.db is relative to the current directory" in text
    assert "sqlite:////absolute.db (four slashes) is an absolute path" in text
    assert list(tmp_path.iterdir()) == []


def test_show_of_a_stream_that_does_not_exist_says_so(filled: Path) -> None:
    done = tidings(filled, "show", "no-such-stream", *STORE)
    assert done.returncode == 1
    assert "stream 'no-such-stream' does not exist" in " ".join(done.stdout.split())


def test_worker_names_the_missing_attribute(filled: Path) -> None:
    done = tidings(filled, "worker", "shop:nosuchattr")
    assert done.returncode != 0
    text = " ".join((done.stdout + done.stderr).split())
    assert "module 'shop' has no attribute 'nosuchattr'" in text
    assert "NoneType" not in text


def test_dlq_show_lists_every_attempt_with_its_time_error_and_traceback(filled: Path) -> None:
    listed = json.loads(tidings(filled, "dlq", "list", *STORE, "--json").stdout)
    first = next(row for row in listed if row["stream"] == "order-o0")
    done = tidings(filled, "dlq", "show", str(first["id"]), *STORE)
    assert done.returncode == 0, done.stdout
    for number in (1, 2, 3):
        assert f"attempt {number} at 20" in done.stdout
    assert done.stdout.count("LookupError: no address for o0") >= 3
    assert done.stdout.count('raise LookupError(f"no address for {event.order}")') == 3
    shown = json.loads(tidings(filled, "dlq", "show", str(first["id"]), *STORE, "--json").stdout)
    assert len(shown["history"]) == shown["attempts"] == 3
    assert all("Traceback" in attempt["traceback"] for attempt in shown["history"])


@pytest.mark.parametrize(
    "command",
    [
        ["subscriptions", *STORE],
        ["subscriptions", "--app", "shop:app"],
        ["subscriptions", *STORE, "--partitions"],
        ["dlq", "list", *STORE],
        ["show", "order-o0", *STORE],
        ["streams", *STORE],
    ],
)
def test_tables_stay_readable_in_80_columns(filled: Path, command: list[str]) -> None:
    done = tidings(filled, *command, columns=80)
    assert done.returncode == 0, done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    whole = {"email-confirmations", "shop.OrderShipped", "order-o0", "cmd:shop.ChargeCard"}
    assert any(name in done.stdout for name in whole)
    for name in whole:
        if name[:6] in done.stdout:
            assert name in done.stdout, f"{name} is broken across lines:\n{done.stdout}"


def test_subscriptions_show_one_row_each_with_honest_lag(filled: Path) -> None:
    rows = json.loads(tidings(filled, "subscriptions", *STORE, "--json").stdout)
    found = {row["subscription"]: row for row in rows}
    assert sorted(found) == ["cmd:shop.ChargeCard", "email-confirmations"]
    email = found["email-confirmations"]
    # "late" is still to be handled; three are dead and one waits behind o0 (counted apart).
    assert (email["pending"], email["parked"], email["waiting"]) == (1, 3, 1)
    assert email["oldest_age"] >= 0 and len(email["partitions"]) == 8
    assert found["cmd:shop.ChargeCard"]["pending"] == 0  # the log head is not its lag
    table = tidings(filled, "subscriptions", *STORE, "--partitions").stdout
    assert table.count("email-confirmations") == 8


def test_subscriptions_with_the_app_mark_orphans_and_what_nothing_handles(shop: Path) -> None:
    (shop / "shop.py").write_text(
        SHOP.replace('"email-confirmations"', '"emails"').replace(
            "@app.command\ndef charge", "def charge"
        )
    )
    done = tidings(shop, "subscriptions", "--app", "shop:app")
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert any("email-confirmations" in line and "orphaned" in line for line in lines)
    text = " ".join(done.stdout.split())
    assert "unhandled: 1 command(s) of type shop.ChargeCard" in text


# --- item 6: an operator can clean up --------------------------------------------------------


def test_reset_and_delete_are_audited(shop: Path) -> None:
    done = tidings(shop, "subscriptions", "reset", "email-confirmations", "--to-end", *STORE)
    assert done.returncode == 0, done.stdout
    rows = json.loads(tidings(shop, "subscriptions", *STORE, "--json").stdout)
    email = next(r for r in rows if r["subscription"] == "email-confirmations")
    assert email["pending"] == 0 and email["parked"] == 3  # passed over; dead letters stay
    done = tidings(
        shop, "subscriptions", "reset", "email-confirmations", "--to-position", "2", *STORE
    )
    assert "after global position 2" in done.stdout
    rows = json.loads(tidings(shop, "subscriptions", *STORE, "--json").stdout)
    email = next(r for r in rows if r["subscription"] == "email-confirmations")
    assert (email["pending"], email["parked"]) == (3, 2)  # held rows above 2 are dropped
    bad = tidings(shop, "subscriptions", "reset", "email-confirmations", *STORE)
    assert bad.returncode != 0 and "exactly one of" in " ".join((bad.stdout + bad.stderr).split())
    done = tidings(shop, "subscriptions", "delete", "email-confirmations", *STORE, "--actor", "ada")
    assert done.returncode == 0 and "deleted" in done.stdout
    rows = json.loads(tidings(shop, "subscriptions", *STORE, "--json").stdout)
    assert [r["subscription"] for r in rows] == ["cmd:shop.ChargeCard"]
    missing = tidings(shop, "subscriptions", "delete", "email-confirmations", *STORE)
    assert missing.returncode == 1 and "no subscription named" in missing.stdout
    audit = json.loads(tidings(shop, "audit", *STORE, "--json").stdout)
    assert (audit[0]["actor"], audit[0]["action"]) == ("ada", "subscription.delete")
    assert [e["action"] for e in audit].count("subscription.reset") == 2


def test_delete_is_refused_while_a_worker_holds_a_lease(shop: Path) -> None:
    with sqlite3.connect(shop / "shop.db") as db:
        db.execute(
            "UPDATE tidings_partitions SET owner = 'host:42:w', lease_expires = 1e12 "
            "WHERE subscription = 'email-confirmations'"
        )
    done = tidings(shop, "subscriptions", "delete", "email-confirmations", *STORE)
    assert done.returncode == 1
    assert "is run by host:42:w" in " ".join(done.stdout.split())
    assert json.loads(tidings(shop, "audit", *STORE, "--json").stdout) == []
    forced = tidings(shop, "subscriptions", "delete", "email-confirmations", "--force", *STORE)
    assert forced.returncode == 0, forced.stdout


def test_dlq_skip_in_bulk_and_a_retry_nobody_runs_says_so(shop: Path) -> None:
    retried = tidings(shop, "dlq", "retry", "--all", *STORE)
    assert retried.returncode == 0
    text = " ".join(retried.stdout.split())
    assert "3 dead letter(s) queued for retry" in text
    assert "no worker runs email-confirmations now" in text
    assert "a running worker replays them" not in text
    none = tidings(shop, "dlq", "skip", "--error", "KeyError", *STORE)
    assert "skipped 0 dead letter(s)" in none.stdout
    rows = json.loads(tidings(shop, "dlq", "list", "--all", *STORE, "--json").stdout)
    assert {r["status"] for r in rows} == {"replay", "waiting"}


def test_dlq_skip_by_error_and_all(shop: Path) -> None:
    skipped = tidings(
        shop,
        "dlq",
        "skip",
        "--error",
        "LookupError: no address",
        "--subscription",
        "email-confirmations",
        *STORE,
    )
    assert skipped.returncode == 0, skipped.stdout
    assert "skipped 3 dead letter(s)" in skipped.stdout
    rows = json.loads(tidings(shop, "dlq", "list", "--all", *STORE, "--json").stdout)
    assert [(r["stream"], r["status"]) for r in rows] == [("order-o0", "replay")]
    nothing = tidings(shop, "dlq", "skip", *STORE)
    assert nothing.returncode != 0 and "give one of" in " ".join(
        (nothing.stdout + nothing.stderr).split()
    )
    audit = json.loads(tidings(shop, "audit", *STORE, "--json").stdout)
    assert [e["action"] for e in audit] == ["dlq.skip-error"] * 3


# --- item 1: show prints what cannot be decoded, as stored ----------------------------------


def test_show_prints_an_undecodable_payload_as_stored(shop: Path) -> None:
    with sqlite3.connect(shop / "shop.db") as db:
        db.execute(
            "UPDATE tidings_log SET data = ? WHERE stream = 'order-o1'",
            (b'{"order": 42}',),
        )
    done = tidings(shop, "show", "order-o1", "--app", "shop:app", "--json")
    assert done.returncode == 0, done.stdout
    (row,) = json.loads(done.stdout)
    assert row["data"] == {"order": 42}
    assert "Expected `str`, got `int`" in row["error"]
    table = tidings(shop, "show", "order-o1", "--app", "shop:app")
    assert table.returncode == 0
    assert "as stored" in table.stdout and "42" in table.stdout
    decoded = json.loads(tidings(shop, "show", "order-o2", "--app", "shop:app", "--json").stdout)
    assert decoded[0]["data"] == {"order": "o2"} and decoded[0]["error"] is None
