"""Reading a backend's SQL from its package: named statements and numbered migrations."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _body(text: str) -> str:
    return "\n".join(
        line for line in text.strip().splitlines() if not line.lstrip().startswith("--")
    ).strip()


def named_statements(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """The statements of ``package``'s ``filename``, each under its ``-- name: x`` line."""
    text = resources.files(package).joinpath(filename).read_text("utf-8")
    parts = _NAME.split(text)
    return {name: _body(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations(package: str) -> list[tuple[int, str, str]]:
    """``(version, file name, script)`` of the ``NNNN_name.sql`` files in ``package``, in order."""
    found = []
    for entry in resources.files(package).iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text("utf-8")))
    return sorted(found)
