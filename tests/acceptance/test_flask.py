"""The Flask example under gunicorn with threads, over real HTTP, many requests at once."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _servers import EXAMPLES, free_port, poll_outcome, serving

SEATS = 12
GUESTS = 4  # each seat is asked for by this many guests at once; exactly one gets it


def test_the_flask_example_under_threaded_gunicorn(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "flask_app", tmp_path / "app")
    port = free_port()
    args = ["gunicorn", "-k", "gthread", "--threads", "8", "-w", "2"]
    args += ["-b", f"127.0.0.1:{port}", "app:web"]
    env = {"TIDINGS_STORE": f"sqlite:///{tmp_path / 'cinema.db'}"}
    with serving(args, tmp_path / "app", port, env) as client:
        base = str(client.base_url)

        def ask(job: tuple[int, int]) -> tuple[int, int, int, dict[str, object]]:
            seat, guest = job
            with httpx.Client(base_url=base, timeout=30) as own:
                answer = own.post(f"/screenings/s1/seats/{seat}", params={"guest": f"g{guest}"})
            if answer.status_code == 409:
                assert answer.headers["content-type"] == "application/problem+json"
            return seat, guest, answer.status_code, answer.json()

        jobs = [(seat, guest) for guest in range(GUESTS) for seat in range(SEATS)]
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(ask, jobs, timeout=120))
        for seat in range(SEATS):
            mine = [a for a in answers if a[0] == seat]
            assert sorted(status for _, _, status, _ in mine) == [200] + [409] * (GUESTS - 1)
            for _, _, status, body in mine:
                if status == 200:
                    assert body == {"reservation": f"s1/{seat}"}
                else:
                    assert body["code"] == "seat-taken"
                    assert body["detail"] == f"seat {seat} is taken"

        sent = client.post("/screenings/s1/seats/3/receipt")
        assert sent.status_code == 202
        assert sent.headers["content-type"] == "application/json"
        done = poll_outcome(client, sent.headers["location"])
        assert done["status"] == "succeeded", done
        assert str(done["result"]).startswith("receipt for g")
        refused = client.post("/screenings/s1/seats/99/receipt").headers["location"]
        assert poll_outcome(client, refused)["code"] == "not-reserved"
