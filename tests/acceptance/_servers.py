"""Start an example web application under a real server in a subprocess, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(
    args: Sequence[str], cwd: Path, port: int, env: dict[str, str], *, ready: str = "/"
) -> Iterator[httpx.Client]:
    """Run ``python -m <args>`` in ``cwd`` until ``GET ready`` answers; yield a client for it;
    then stop it with SIGTERM (its output is shown if it fails to start)."""
    full = {**os.environ, **env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{cwd}"}
    log = cwd / f"server-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=cwd, env=full, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"the server exited: {log.read_text()}")
                try:
                    client.get(ready)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no answer in 30s: {log.read_text()}") from None
                    time.sleep(0.05)
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def poll_outcome(client: httpx.Client, location: str, timeout: float = 20) -> dict[str, object]:
    """GET a sent command's outcome until it is final."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, object] = client.get(location).json()
        if body["final"] or time.monotonic() > deadline:
            return body
        time.sleep(0.05)
