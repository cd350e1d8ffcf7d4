"""The documentation's code blocks run, in order, as a reader would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def blocks(path: Path, language: str = "python") -> str:
    return "\n\n".join(re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S))


def python_blocks(path: Path) -> str:
    return blocks(path)


@pytest.mark.parametrize("doc", ["docs/quickstart.md", "README.md"])
def test_the_code_blocks_run(doc: str, tmp_path: Path) -> None:
    script = tmp_path / "doc.py"
    script.write_text(python_blocks(ROOT / doc))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if doc == "docs/quickstart.md":
        assert "refused: seat A1 is taken" in done.stdout
        assert "{'guest': 'ada'}" in done.stdout
        assert "cmd:SendTicket 3 ConnectionError: mail server unreachable" in done.stdout
        assert "succeeded ticket for A1 sent to ada" in done.stdout
        assert "True ticket for A2 sent to ada" in done.stdout
    else:
        assert done.stdout.split() == ["seat", "taken", "succeeded", "taken"]


@pytest.mark.parametrize(
    "doc",
    [
        "docs/workflows.md",
        "docs/dependencies.md",
        "docs/read-models.md",
        "docs/deciders.md",
        "docs/sync.md",
        "docs/web.md",
        "docs/operations.md",
        "docs/console.md",
    ],
)
def test_the_guide_prints_what_it_says(doc: str, tmp_path: Path) -> None:
    path = ROOT / doc
    script = tmp_path / "guide.py"
    script.write_text(blocks(path))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == blocks(path, "text").strip()


def test_the_testing_guide_is_a_test_file_that_passes(tmp_path: Path) -> None:
    doc = ROOT / "docs/testing.md"
    (tmp_path / "test_guide.py").write_text(blocks(doc))
    (tmp_path / "pyproject.toml").write_text(blocks(doc, "toml"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_guide.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout


def test_the_pytest_guide_passes_with_no_configuration(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "test_guide.py").write_text(blocks(ROOT / "docs/pytest.md"))
    # The plugin named as well as installed: the shared development environment may hold an
    # install from before its entry point existed (naming it twice loads it once).
    plugin = ["-p", "tidings.testing.pytest_plugin"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, "test_guide.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TIDINGS_TEST_POSTGRES": postgres_url},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert not (tmp_path / "bank.db").exists()
