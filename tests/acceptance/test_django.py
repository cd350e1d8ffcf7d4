"""The Django example: its tests through Django's test client, then gunicorn with threads and
``manage.py tidings_worker`` beside it, over real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _servers import EXAMPLES, ROOT, free_port, poll_outcome, serving


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES / "django_project", tmp_path / "site")
    return tmp_path / "site"


def environment(project: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{project}",
        "TIDINGS_STORE": f"sqlite:///{project / 'cinema.db'}",
        **extra,
    }


def test_the_example_passes_its_tests_with_djangos_test_client(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "box_office", "-v", "2"],
        cwd=project,
        env=environment(project, TIDINGS_WORKER="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 2 tests" in done.stderr and "OK" in done.stderr


def test_on_a_postgresql_default_database_the_app_runs_in_its_schema(
    project: Path, postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    env = environment(project, TIDINGS_WORKER="1", DJANGO_POSTGRES=postgres_url)
    env["TIDINGS_SCHEMA"] = pg_schema
    del env["TIDINGS_STORE"]
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "box_office"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    from psycopg import sql

    with psycopg.connect(postgres_url) as conn:
        query = sql.SQL("SELECT count(*) FROM {}.outcomes").format(sql.Identifier(pg_schema))
        row = conn.execute(query).fetchone()
    assert row is not None and row[0] >= 1
    assert not (project / "cinema.db").exists()


def test_the_example_under_gunicorn_with_the_worker_command_beside_it(project: Path) -> None:
    env = environment(project)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "tidings_worker", "--lease-ttl", "5"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = free_port()
        args = ["gunicorn", "-k", "gthread", "--threads", "8", "-b", f"127.0.0.1:{port}"]
        args.append("cinema_site.wsgi")
        with serving(args, project, port, {"TIDINGS_STORE": env["TIDINGS_STORE"]}) as client:
            base = str(client.base_url)

            def ask(job: tuple[int, int]) -> tuple[int, int]:
                seat, guest = job
                with httpx.Client(base_url=base, timeout=30) as own:
                    answer = own.post(f"/screenings/d1/seats/{seat}", params={"guest": f"g{guest}"})
                return seat, answer.status_code

            jobs = [(seat, guest) for guest in range(3) for seat in range(10)]
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(ask, jobs, timeout=120))
            for seat in range(10):
                assert sorted(s for n, s in answers if n == seat) == [200, 409, 409]

            sent = client.post("/screenings/d1/seats/4/receipt")
            assert sent.status_code == 202, sent.text
            done = poll_outcome(client, sent.headers["location"])
            assert done["status"] == "succeeded", done
            assert str(done["result"]).startswith("receipt for g")
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert "tidings worker for 'box-office' started" in output


def test_a_postgresql_default_database_is_the_default_store() -> None:
    from tidings.integrations.django import store_url

    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "USER": "web",
        "PASSWORD": "p@ss/word",
        "HOST": "db.internal",
        "PORT": 5433,
    }
    assert (
        store_url(database) == "postgresql://web:p%40ss%2Fword@db.internal:5433/shop?schema=tidings"
    )
    assert store_url({"ENGINE": "django.db.backends.postgresql", "NAME": "shop"}) == (
        "postgresql://localhost/shop?schema=tidings"
    )
    assert store_url({"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}) is None
