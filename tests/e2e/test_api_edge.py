"""Hostile input at the API's edge gets a 4xx that says what was wrong, never a 500:
oversized strings, ids past 2^63, text that is not Unicode; times carry their zone."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from conveyor.protocol import MAX_RECORD_INT
from tests.helpers import ServerProcess, running_server

BIG = 2**64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the file: each test names its own app."""
    with running_server(tmp_path_factory.mktemp("edge") / "data") as proc:
        yield proc


def test_a_24_mb_repo_is_refused_without_being_echoed(server: ServerProcess) -> None:
    repo = "x" * (24 * 1024 * 1024)
    for method, path in (("POST", "/api/apps"), ("PATCH", "/api/apps/big")):
        if method == "PATCH":
            server.add_app("big", "/srv/git/big.git")
        r = server.http.request(method, path, json={"name": "big", "repo": repo})
        assert r.status_code == 422, (method, r.status_code)
        assert len(r.content) < 1000, len(r.content)  # the 24 MB are not sent back
        (issue,) = r.json()["detail"]
        assert issue["loc"] == ["body", "repo"] and "4096" in issue["msg"], issue
    assert len(server.http.get("/api/status").content) < 10_000


def test_ids_and_offsets_past_2_63_are_422(server: ServerProcess) -> None:
    for path in (
        f"/api/runs/{BIG}",
        f"/api/deployments/{BIG}",
        f"/api/steps/{BIG}/log",
        f"/api/steps/1/log?offset={BIG}",
        f"/api/agent/desired?after={BIG}",
    ):
        r = server.http.get(path)
        assert r.status_code in (401, 403, 422), (path, r.status_code, r.text)  # agents: 403
    assert server.http.post(f"/api/runs/{BIG}/abort").status_code == 422
    assert server.http.delete(f"/api/tokens/{BIG}").status_code == 422
    too_often = server.http.post(
        "/api/apps", json={"name": "often", "repo": "/r", "poll_interval": BIG}
    )
    assert too_often.status_code == 422, too_often.text
    # the largest id a record has on either engine (PostgreSQL's integer): unknown
    assert server.http.get(f"/api/runs/{MAX_RECORD_INT}").status_code == 404
    assert server.http.get(f"/api/runs/{MAX_RECORD_INT + 1}").status_code == 422


def test_text_that_is_not_unicode_is_422(server: ServerProcess) -> None:
    headers = {"Content-Type": "application/json"}
    for body in (b'{"name": "uni", "repo": "/r\\ud800"}', b'{"name": "uni", "repo": "/r\xff"}'):
        r = server.http.post("/api/apps", content=body, headers=headers)
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.json()["detail"][0]["type"] == "unicode_invalid"
    fine = server.http.post(
        "/api/apps", content='{"name": "uni", "repo": "/r/\\ud83d\\ude00"}', headers=headers
    )
    assert fine.status_code == 201 and fine.json()["repo"] == "/r/\U0001f600"


def test_times_carry_their_zone(server: ServerProcess) -> None:
    created = server.add_app("tz", "/srv/git/tz.git")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created["created_at"])
    token = server.get("/api/tokens")[0]
    assert token["created_at"].endswith("Z")


def test_every_route_declares_what_it_answers(server: ServerProcess) -> None:
    paths = server.get("/openapi.json")["paths"]
    for path, methods in paths.items():
        for method, op in methods.items():
            codes = set(op["responses"])
            if op.get("x-role") in ("viewer", "deployer", "admin", "agent"):
                assert {"401", "403", "503"} <= codes, (method, path, codes)
            if "{" in path:
                assert {"404", "422"} <= codes, (method, path, codes)
    assert {"404", "409"} <= set(paths["/api/apps/{name}"]["delete"]["responses"])
