"""The command line, started as a user starts it: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def tidings(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )


def test_demo_reserves_refuses_and_keeps_its_invariant(tmp_path: Path) -> None:
    db = tmp_path / "cinema.db"
    done = tidings("demo", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "refused: seat A1 is already taken" in done.stdout
    assert "4 reserved, 1 refused; no seat sold twice: holds" in done.stdout
    # A second run on the same file is a new screening; the first one's stream is unchanged.
    again = tidings("demo", "--db", str(db))
    assert again.returncode == 0, again.stderr
    listed = tidings("streams", "--store", f"sqlite:///{db}", "--json")
    assert json.loads(listed.stdout) == [
        {"stream": "screening-1", "version": 4},
        {"stream": "screening-2", "version": 4},
    ]
    shown = json.loads(
        tidings("show", "screening-1", "--store", f"sqlite:///{db}", "--json").stdout
    )
    assert [m["position"] for m in shown] == [1, 2, 3, 4]
    assert {m["data"]["seat"] for m in shown} == {"A1", "A2", "B4", "B5"}


def test_demo_runs_without_arguments_in_a_temporary_directory() -> None:
    done = tidings("demo")
    assert done.returncode == 0, done.stderr
    assert "no seat sold twice: holds" in done.stdout


def test_a_bad_store_url_is_a_clear_error_not_a_traceback() -> None:
    done = tidings("streams", "--store", "mysql://nope")
    assert done.returncode == 1
    assert "unknown store URL" in done.stdout
    assert "Traceback" not in done.stderr
