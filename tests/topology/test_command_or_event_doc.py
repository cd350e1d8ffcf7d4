"""docs/command-or-event.md: its Python blocks run as one script and print its text blocks; its
pyproject example is what the advisor reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tidings.topology import load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "command-or-event.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_page_prints_what_it_says(tmp_path: Path) -> None:
    (tmp_path / "guide.py").write_text("\n\n".join(blocks("python")))
    done = subprocess.run(
        [sys.executable, "guide.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "".join(blocks("text"))


def test_its_pyproject_example_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(blocks("toml")[0])
    assert load_config(tmp_path) == {
        "TD002": ["ReserveSeat"],
        "TD003": ["cinema.ReceiptIssued"],
        "TD012": ["*"],
    }
