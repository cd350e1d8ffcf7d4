"""Small Apps written as modules of their own (the advisor reads their source), and the
test-only Node tools (``.ci/node``: the AsyncAPI parser, the SARIF schema)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".ci" / "node" / "node_modules"

HEADER = """\
from tidings import App, Command, Context, Decider, Event, Refused
from tidings.messages import CommandFailed
from tidings.topology import allow, critical
from tidings.workflow import Step, Workflow
"""

MakeModule = Callable[[str], ModuleType]


@pytest.fixture
def make_module(tmp_path: Path) -> Iterator[MakeModule]:
    """Write ``source`` (with the usual imports) as a module of its own and import it."""
    made: list[str] = []

    def make(source: str) -> ModuleType:
        name = f"topo_{uuid.uuid4().hex[:12]}"
        path = tmp_path / f"{name}.py"
        path.write_text(HEADER + textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        made.append(name)
        spec.loader.exec_module(module)
        return module

    yield make
    for name in made:
        sys.modules.pop(name, None)


def node_tool(path: Path, what: str) -> Path:
    """A test-only Node tool that ``.ci/run`` installs: skipped on a laptop without it, a
    failure in CI."""
    if shutil.which("node") is None or not path.exists():
        reason = f"{what} is missing: run `npm install --prefix .ci/node @asyncapi/parser @microsoft/jest-sarif`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is required in CI: {reason}")
        pytest.skip(reason)
    return path
