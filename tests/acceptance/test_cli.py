"""The command line, started as a user starts it: a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "COLUMNS": "200"}


def tidings(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def summary(stdout: str) -> dict[str, int]:
    """The demo's summary table as {label: count}."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^│\s*(.+?)\s*│\s*(\d+)\s*│$", line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def invariants(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^│\s*(.+?)\s*│\s*(yes|NO)\s*│$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_demo_runs_the_cinema_and_every_invariant_holds(tmp_path: Path) -> None:
    done = tidings("demo", "--db", str(tmp_path / "cinema.db"), "--seed", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    counts = summary(done.stdout)
    assert counts["guests asking for a seat"] == 300
    assert counts["reserved"] + counts["refused (seat taken)"] == 300
    assert counts["refused (seat taken)"] > 0
    assert counts["released: no payment in time"] > 0
    assert counts["released: payment declined"] > 0
    assert counts["e-mails dead-lettered"] > 0
    assert counts["receipts issued"] == counts["confirmed (paid)"]
    assert (
        counts["confirmed (paid)"]
        + counts["released: no payment in time"]
        + counts["released: payment declined"]
        == counts["reserved"]
    )
    checks = invariants(done.stdout)
    assert len(checks) == 5 and set(checks.values()) == {"yes"}, checks
    assert "the operator's view" in done.stdout and "MailboxUnavailable" in done.stdout
    # Deterministic given the seed: a fresh file and the same seed tell the same story.
    again = tidings("demo", "--db", str(tmp_path / "again.db"), "--seed", "3")
    assert summary(again.stdout) == counts


def test_a_killed_demo_resumed_on_the_same_file_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "cinema.db"
    first = subprocess.Popen(
        [sys.executable, "-m", "tidings", "demo", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    # Kill it in the middle: reservations made, payments and workflows still under way.
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the demo never got going"
        assert first.poll() is None, "the demo finished before it could be killed"
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    reserved = conn.execute(
                        "SELECT count(*) FROM tidings_log WHERE type = 'cinema.SeatReserved'"
                    ).fetchone()[0]
                    confirmed = conn.execute(
                        "SELECT count(*) FROM tidings_log WHERE type = 'cinema.ReservationConfirmed'"
                    ).fetchone()[0]
            except sqlite3.OperationalError:
                reserved = confirmed = 0
            if reserved > 50 and 0 < confirmed < reserved // 2:
                break
        time.sleep(0.02)  # polling the file for the moment to kill; not a synchronisation
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    resumed = tidings("demo", "--db", str(db))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    checks = invariants(resumed.stdout)
    assert len(checks) == 5 and set(checks.values()) == {"yes"}, checks
    assert (
        summary(resumed.stdout)["reservations in the store, all runs"]
        > summary(resumed.stdout)["reserved"]
    )


def test_streams_and_show_list_what_the_demo_recorded(tmp_path: Path) -> None:
    db = tmp_path / "cinema.db"
    assert tidings("demo", "--db", str(db), "--guests", "40").returncode == 0
    listed = json.loads(
        tidings("streams", "--store", f"sqlite:///{db}", "--prefix", "screening-", "--json").stdout
    )
    assert listed and all(
        row["stream"].startswith("screening-") and row["version"] > 0 for row in listed
    )
    users = json.loads(tidings("streams", "--store", f"sqlite:///{db}", "--json").stdout)
    everything = json.loads(
        tidings(
            "streams", "--store", f"sqlite:///{db}", "--all", "--json", "--limit", "10000"
        ).stdout
    )
    assert not any(row["stream"].startswith("$") for row in users)
    assert any(row["stream"].startswith("$wf-purchase-") for row in everything)
    shown = json.loads(
        tidings("show", listed[0]["stream"], "--store", f"sqlite:///{db}", "--json").stdout
    )
    assert [m["position"] for m in shown] == list(range(1, len(shown) + 1))
    assert shown[0]["type"] in ("cinema.SeatReserved", "cinema.ReserveSeat")
    subs = json.loads(tidings("subscriptions", "--store", f"sqlite:///{db}", "--json").stdout)
    assert {"email", "website", "workflow:purchase"} <= {row["subscription"] for row in subs}
    audit = json.loads(tidings("audit", "--store", f"sqlite:///{db}", "--json").stdout)
    assert audit and all(entry["actor"] == "demo-operator" for entry in audit)


def test_a_bad_store_url_is_a_clear_error_not_a_traceback() -> None:
    done = tidings("streams", "--store", "mysql://nope")
    assert done.returncode == 1
    assert "unknown store URL" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["worker", "no_such_module:app"], ["worker", "json:dumps"]])
def test_worker_refuses_what_is_not_an_app(args: list[str]) -> None:
    done = tidings(*args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
