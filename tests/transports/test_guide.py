"""docs/transports.md's example runs on each broker and prints what the page says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "transports.md"


@pytest.fixture(params=["rabbitmq", "nats"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(URL, namespace) of a broker with a namespace of its own."""
    if request.param == "rabbitmq":
        return request.getfixturevalue("amqp_url"), request.getfixturevalue("namespace")
    return request.getfixturevalue("nats_url"), request.getfixturevalue("nats_namespace")


def test_the_transports_guide_prints_what_it_says(tmp_path: Path, broker: tuple[str, str]) -> None:
    url, namespace = broker
    guide = GUIDE.read_text()
    script = tmp_path / "guide.py"
    script.write_text("\n\n".join(re.findall(r"```python\n(.*?)```", guide, flags=re.S)))
    expected = "\n".join(re.findall(r"```text\n(.*?)```", guide, flags=re.S)).strip()
    env = dict(os.environ, TIDINGS_BROKER=url, TIDINGS_NAMESPACE=namespace)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == expected
