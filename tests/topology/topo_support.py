"""The test-only Node tools ``.ci/run`` installs in ``.ci/node``: the official AsyncAPI parser,
and the SARIF 2.1.0 schema (shipped in @microsoft/jest-sarif)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".ci" / "node" / "node_modules"


def node_tool(path: Path, what: str) -> Path:
    """A test-only Node tool that ``.ci/run`` installs: skipped on a laptop without it, a
    failure in CI."""
    if shutil.which("node") is None or not path.exists():
        reason = f"{what} is missing: run `npm install --prefix .ci/node @asyncapi/parser @microsoft/jest-sarif`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is required in CI: {reason}")
        pytest.skip(reason)
    return path
