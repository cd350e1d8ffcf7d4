"""The advisor: build each App's topology, apply the rules, and drop what is allowed in code or
in ``pyproject.toml``."""

from __future__ import annotations

import tomllib
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from tidings.errors import ConfigurationError
from tidings.topology.marks import RULE_ID
from tidings.topology.model import Topology, build
from tidings.topology.rules import ERROR, RULES, WARNING, Finding, findings

if TYPE_CHECKING:
    from tidings.app import App

#: what ``[tool.tidings.check] allow`` holds: rule id -> type or handler names (``"*"``: all)
Allowed = Mapping[str, Sequence[str]]


class Report(msgspec.Struct):
    """What ``tidings check`` found: every finding, the suppressed ones marked."""

    topologies: list[Topology]
    findings: list[Finding]

    @property
    def shown(self) -> list[Finding]:
        """The findings not suppressed."""
        return [f for f in self.findings if f.suppressed is None]

    def count(self, severity: str) -> int:
        return sum(1 for f in self.shown if f.severity == severity)

    def failed(self, strict: bool = False) -> bool:
        """Whether the check fails: on an error, or with ``strict`` on a warning too."""
        return self.count(ERROR) > 0 or (strict and self.count(WARNING) > 0)


def load_config(start: Path | None = None) -> dict[str, list[str]]:
    """``[tool.tidings.check] allow`` of the nearest ``pyproject.toml`` from ``start`` (the
    current directory) upward; empty when there is none."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        path = folder / "pyproject.toml"
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
            section = data.get("tool", {}).get("tidings", {}).get("check", {})
            return check_allowed(section.get("allow", {}), str(path))
    return {}


def check_allowed(allowed: Any, where: str = "allow") -> dict[str, list[str]]:
    """``allowed`` checked: a table of rule ids to lists of names."""
    example = 'allow = {TD002 = ["ReserveSeat"]}'
    if not isinstance(allowed, Mapping):
        raise ConfigurationError(f"{where}: [tool.tidings.check] allow is a table, e.g. {example}")
    checked = {}
    for rule, names in allowed.items():
        if not (isinstance(rule, str) and RULE_ID.fullmatch(rule)):
            raise ConfigurationError(f"{where}: {rule!r} is not a rule id (TD001…), e.g. {example}")
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ConfigurationError(
                f"{where}: allow.{rule} lists type or handler names ('*' for all), e.g. {example}"
            )
        checked[rule] = list(names)
    return checked


def _marks(topology: Topology) -> dict[str, set[str]]:
    """The rules allowed in code, by the names they are allowed on."""
    marks: dict[str, set[str]] = {}
    for m in topology.messages:
        for name in (m.name, m.type_name):
            marks.setdefault(name, set()).update(m.allow)
    for h in topology.handlers:
        marks.setdefault(h.name, set()).update(h.allow)
    return marks


def suppress(
    found: Iterable[Finding], topologies: Sequence[Topology], allowed: Allowed
) -> list[Finding]:
    """``found`` with those allowed in code or configuration marked suppressed."""
    marks: dict[str, dict[str, set[str]]] = {t.app: _marks(t) for t in topologies}
    result = []
    for f in found:
        in_code = any(
            f.rule in marks.get(app, {}).get(s, set())
            for app in f.app.split("+")
            for s in f.subjects
        )
        names = allowed.get(f.rule, ())
        if in_code:
            f = msgspec.structs.replace(f, suppressed="in code")
        elif "*" in names or any(s in names for s in f.subjects):
            f = msgspec.structs.replace(f, suppressed="pyproject.toml")
        result.append(f)
    return result


def check(
    *apps: App,
    modules: Iterable[types.ModuleType] = (),
    allowed: Allowed | None = None,
) -> Report:
    """Review ``apps`` (one, or several that may share a store): their registrations, and a
    static read of ``modules`` and of their handlers' modules. ``allowed`` defaults to
    ``[tool.tidings.check] allow`` of the nearest ``pyproject.toml``."""
    modules = list(modules)
    topologies = [build(app, modules) for app in apps]
    config = load_config() if allowed is None else check_allowed(allowed)
    return Report(topologies, suppress(findings(topologies), topologies, config))


__all__ = ["RULES", "Report", "check", "load_config", "suppress"]
