"""The FastAPI example under uvicorn, over real HTTP: results, 409 refusals, 202 and outcomes."""

from __future__ import annotations

import shutil
from pathlib import Path

from _servers import EXAMPLES, free_port, poll_outcome, serving


def test_the_fastapi_example_under_uvicorn(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "fastapi_app", tmp_path / "app")
    port = free_port()
    args = ["uvicorn", "main:api", "--host", "127.0.0.1", "--port", str(port)]
    env = {"TIDINGS_STORE": f"sqlite:///{tmp_path / 'cinema.db'}"}
    with serving(args, tmp_path / "app", port, env, ready="/docs") as client:
        ok = client.post("/screenings/s1/seats/A1", params={"guest": "ada"})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"reservation": "s1/A1"}

        taken = client.post("/screenings/s1/seats/A1", params={"guest": "bob"})
        assert taken.status_code == 409
        assert taken.headers["content-type"] == "application/problem+json"
        assert taken.json() == {
            "type": "about:blank",
            "title": "Conflict",
            "status": 409,
            "detail": "seat A1 is taken",
            "reason": "seat A1 is taken",
            "code": "seat-taken",
            "instance": "/screenings/s1/seats/A1",
        }

        sent = client.post("/screenings/s1/seats/A1/receipt")
        assert sent.status_code == 202
        location = sent.headers["location"]
        assert location.endswith(f"/outcomes/{sent.json()['id']}")
        done = poll_outcome(client, location)
        assert done["status"] == "succeeded", done
        assert done["result"] == "receipt for ada, seat A1"

        refused = poll_outcome(
            client, client.post("/screenings/s1/seats/B9/receipt").headers["location"]
        )
        assert (refused["status"], refused["code"]) == ("refused", "not-reserved")
