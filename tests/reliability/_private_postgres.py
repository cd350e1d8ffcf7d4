"""A PostgreSQL server of the test's own, to stop and start: the shared one on 5432 stays up.

It is made with ``initdb`` in a temporary directory and run with ``pg_ctl`` on a free port, as the
``postgres`` user when the tests run as root (``initdb`` refuses root). Without the binaries the
tests skip, saying why; in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``; fail it in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


class PrivatePostgres:
    """A server in a temporary directory; :meth:`stop` and :meth:`start` it at will."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            unavailable("no PostgreSQL server binaries (initdb, pg_ctl) to run a private server")
        assert bin_dir is not None
        self._bin = bin_dir
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None and shutil.which("runuser") is None:
            unavailable("running as root without runuser: initdb refuses root")
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        if self._user is not None:
            shutil.chown(self.dir, self._user)
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.running = False

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        """Start the server; returns once it accepts connections."""
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=40"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """Stop the server at once, ending every session (``pg_ctl -m fast``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
