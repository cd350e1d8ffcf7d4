"""Small Apps written as modules of their own: the advisor reads their source."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

HEADER = """\
from tidings import App, Command, Context, Decider, Event, Refused
from tidings.messages import CommandFailed
from tidings.topology import allow
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
