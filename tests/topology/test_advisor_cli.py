"""``tidings check``, ``asyncapi`` and ``graph`` as a user runs them: a subprocess, on the cinema
and on small Apps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
from topo_support import NODE_MODULES, node_tool

CINEMA = "tidings.examples.cinema.app:build_app"
SARIF_SCHEMA = NODE_MODULES / "@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json"


def tidings(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def write_app(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(
        "from tidings import App, Command, Context, Event, Refused\n" + textwrap.dedent(body)
    )
    return f"{folder / name}.py:app"


def test_the_cinema_shows_the_one_finding_its_docs_explain() -> None:
    done = tidings("check", CINEMA)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TD003 event-without-subscriber src/tidings/examples/cinema/app.py" in done.stdout
    assert "event ReceiptIssued is published, but nothing subscribes to it" in done.stdout
    assert done.stdout.strip().endswith("cinema: 0 error, 0 warning, 1 info; 1 allowed")
    report = json.loads(tidings("check", CINEMA, "--format", "json").stdout)
    found = [(f["rule"], f["subjects"][0], f["suppressed"]) for f in report["findings"]]
    assert found == [("TD002", "ReserveSeat", "in code"), ("TD003", "ReceiptIssued", None)]
    assert report["counts"] == {"error": 0, "warning": 0, "info": 1}


def test_sarif_is_valid_against_the_schema() -> None:
    schema = json.loads(node_tool(SARIF_SCHEMA, "the SARIF 2.1.0 schema").read_text())
    done = tidings("check", CINEMA, "--format", "sarif")
    assert done.returncode == 0, done.stderr
    log: dict[str, Any] = json.loads(done.stdout)
    jsonschema.Draft4Validator(schema).validate(log)
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [f"TD{n:03}" for n in range(1, 14)]
    results = {r["ruleId"]: r for r in run["results"]}
    assert rules[results["TD003"]["ruleIndex"]]["id"] == "TD003"
    assert results["TD003"]["level"] == "note"
    location = results["TD003"]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "src/tidings/examples/cinema/app.py"
    assert results["TD002"]["suppressions"] == [
        {"kind": "inSource", "justification": "allowed in code"}
    ]


def test_exit_codes_errors_fail_and_strict_fails_on_warnings(tmp_path: Path) -> None:
    error = write_app(
        tmp_path,
        "refusing",
        """
        class Happened(Event):
            id: str

        app = App("refusing")

        @app.subscriber("picky")
        async def picky(event: Happened, ctx: Context) -> None:
            raise Refused("no")

        async def main() -> None:
            await app.publish(Happened(id="1"))
        """,
    )
    warning = write_app(
        tmp_path,
        "named",
        """
        class SendMail(Event):
            id: str

        app = App("named")

        @app.subscriber("mail")
        async def mail(event: SendMail, ctx: Context) -> None:
            ctx.put("mail", event.id, "sent")

        async def main() -> None:
            await app.publish(SendMail(id="1"))
        """,
    )
    failed = tidings("check", error)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error (1)" in failed.stdout and "TD005 subscriber-refuses" in failed.stdout
    assert "| An event is a fact" in failed.stdout
    assert tidings("check", warning).returncode == 0
    strict = tidings("check", warning, "--strict")
    assert strict.returncode == 1 and "TD009 event-named-as-order" in strict.stdout
    assert tidings("check", CINEMA, "--strict").returncode == 0


def test_pyproject_allows_from_the_current_directory_upward(tmp_path: Path) -> None:
    target = write_app(
        tmp_path,
        "lonely",
        """
        class Noticed(Event):
            id: str

        app = App("lonely")

        async def main() -> None:
            await app.publish(Noticed(id="1"))
        """,
    )
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tidings.check]\nallow = {TD003 = ["Noticed"]}\n'
    )
    (tmp_path / "deep").mkdir()
    report = json.loads(tidings("check", target, "-f", "json", cwd=tmp_path / "deep").stdout)
    assert [(f["rule"], f["suppressed"]) for f in report["findings"]] == [
        ("TD003", "pyproject.toml")
    ]
    (tmp_path / "pyproject.toml").write_text("[tool.tidings.check]\nallow = {TD3 = []}\n")
    bad = tidings("check", target, cwd=tmp_path / "deep")
    assert bad.returncode == 2 and "is not a rule id" in bad.stdout


def test_a_target_that_is_not_an_app_is_refused() -> None:
    done = tidings("check", "tidings.examples.cinema.app:Cinema")
    assert done.returncode == 2
    assert "is not a tidings App" in done.stderr


def test_asyncapi_of_the_cinema_passes_the_official_parser(tmp_path: Path) -> None:
    parse = node_tool(NODE_MODULES / "@asyncapi/parser", "the AsyncAPI parser")
    out = tmp_path / "cinema.asyncapi.json"
    done = tidings("asyncapi", CINEMA, "--output", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    checked = subprocess.run(
        ["node", str(Path(__file__).with_name("asyncapi_parse.js")), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(parse.parents[1])},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "valid: 11 channels" in checked.stdout
    diagnostics = [json.loads(line) for line in checked.stdout.splitlines() if line.startswith("{")]
    assert not [d for d in diagnostics if d["severity"] == 0]


def test_graph_prints_mermaid_and_dot() -> None:
    mermaid = tidings("graph", CINEMA)
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart LR\n")
    assert 'H_workflow_purchase -->|"sends"| C_cinema_IssueReceipt' in mermaid.stdout
    dot = tidings("graph", CINEMA, "--format", "dot")
    assert dot.stdout.startswith('digraph "cinema" {')
    assert 'H_workflow_purchase -> H_workflow_purchase [label="times out: payment"];' in dot.stdout


def test_include_reads_where_else_messages_are_sent() -> None:
    # The demo invokes ReserveSeat (so TD002 no longer applies) and publishes DemoStarted.
    done = tidings("check", CINEMA, "--include", "tidings.examples.cinema.demo", "-f", "json")
    found = [(f["rule"], f["subjects"][0]) for f in json.loads(done.stdout)["findings"]]
    assert found == [("TD003", "DemoStarted"), ("TD003", "ReceiptIssued")]
    missing = tidings("check", CINEMA, "--include", "no_such_module")
    assert missing.returncode == 2 and "cannot import 'no_such_module'" in missing.stderr
