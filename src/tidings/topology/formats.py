"""The advisor's report for people (text grouped by severity), scripts (JSON) and code scanning
(SARIF 2.1.0)."""

from __future__ import annotations

import textwrap
from typing import Any

import msgspec

from tidings.topology.check import Report
from tidings.topology.rules import RULES, SEVERITIES, Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def text(report: Report, *, explain: bool = True, markup: bool = False) -> str:
    """The findings grouped by severity, each with its rule's explanation once (rich markup when
    ``markup``)."""
    lines: list[str] = []
    explained: set[str] = set()
    shown = report.shown
    for severity in SEVERITIES:
        group = [f for f in shown if f.severity == severity]
        if not group:
            continue
        title = f"{severity} ({len(group)})"
        lines.append(f"[{_STYLE[severity]}]{title}[/]" if markup else title)
        for f in group:
            where = f" {f.place}" if f.place is not None else ""
            lines.append(f"  {f.rule} {RULES[f.rule].name}{where}")
            lines.append(f"    {_escape(f.message, markup)}")
            if explain and f.rule not in explained:
                explained.add(f.rule)
                body = textwrap.fill(RULES[f.rule].explanation, width=92)
                lines.append(textwrap.indent(_escape(body, markup), "    | "))
    suppressed = len(report.findings) - len(shown)
    counts = ", ".join(f"{report.count(s)} {s}" for s in SEVERITIES)
    summary = f"{counts}; {suppressed} allowed" if suppressed else counts
    apps = ", ".join(t.app for t in report.topologies)
    lines.append(f"{apps}: {summary}" if shown else f"{apps}: no findings ({summary})")
    return "\n".join(lines)


def _escape(line: str, markup: bool) -> str:
    return line.replace("[", r"\[") if markup else line


def as_json(report: Report) -> dict[str, Any]:
    """The findings (the allowed ones too, marked) and the counts, as JSON values."""
    return {
        "apps": [t.app for t in report.topologies],
        "counts": {s: report.count(s) for s in SEVERITIES},
        "allowed": len(report.findings) - len(report.shown),
        "findings": [
            {**msgspec.to_builtins(f), "name": RULES[f.rule].name} for f in report.findings
        ],
        "rules": [msgspec.to_builtins(r) for r in RULES.values()],
    }


def sarif(report: Report) -> dict[str, Any]:
    """A SARIF 2.1.0 log of one run: every rule, and a result per finding (allowed ones carry a
    suppression, as code scanning expects)."""
    ids = list(RULES)
    rules = [
        {
            "id": r.id,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "fullDescription": {"text": r.explanation},
            "help": {"text": r.explanation},
            "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
        }
        for r in RULES.values()
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "tidings check",
                        "informationUri": "https://pypi.org/project/tidings/",
                        "rules": rules,
                    }
                },
                "results": [_result(f, ids.index(f.rule)) for f in report.findings],
            }
        ],
    }


def _result(f: Finding, index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "ruleIndex": index,
        "level": _SARIF_LEVEL[f.severity],
        "message": {"text": f.message},
        "properties": {"app": f.app, "subjects": f.subjects},
    }
    if f.place is not None:
        result["locations"] = [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": f.place.file.replace("\\", "/")},
                    "region": {"startLine": f.place.line},
                }
            }
        ]
    if f.suppressed is not None:
        kind = "inSource" if f.suppressed == "in code" else "external"
        result["suppressions"] = [{"kind": kind, "justification": f"allowed {f.suppressed}"}]
    return result
