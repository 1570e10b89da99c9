"""Every API route refuses a missing token (401) and a token of too low a role (403)."""

from __future__ import annotations

import re

import httpx

from tests.helpers import ServerProcess

ROLES = ("viewer", "deployer", "admin")
RUNNER = "runner"  # beside the ladder: its routes take it alone, the others refuse it


def _token(server: ServerProcess, role: str) -> str:
    return str(server.post("/api/tokens", {"name": f"t-{role}", "role": role})["token"])


def _routes(server: ServerProcess) -> list[tuple[str, str, str]]:
    spec = server.get("/openapi.json")
    found = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if path.startswith("/api/"):
                assert "x-role" in op, f"{method.upper()} {path} declares no role"
                found.append((method.upper(), path, op["x-role"]))
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "999", path)


def test_every_api_route_checks_its_token_and_role(server: ServerProcess) -> None:
    routes = _routes(server)
    assert len(routes) >= 15
    tokens = {role: _token(server, role) for role in (*ROLES, RUNNER)}
    with httpx.Client(base_url=server.url) as http:  # one client: each costs a TLS context
        for method, path, needed in routes:
            url = _concrete(path)
            if needed == "enrolment":  # authenticated by the one-time token in its body
                r = http.post(url, json={"name": "x", "token": "cvy_wrong"})
                assert r.status_code == 401, (method, path, r.text)
                continue
            if needed == "flag-client":  # an SDK's client token (`conveyor flag token`) only
                for headers in ({}, *({"Authorization": f"Bearer {t}"} for t in tokens.values())):
                    r = http.request(method, url, json={}, headers=headers)
                    assert r.status_code == 401, (method, path, r.text)
                continue
            missing = http.request(method, url, json={})
            assert missing.status_code == 401, (method, path, missing.text)
            bad = http.request(method, url, json={}, headers={"Authorization": "Bearer cvy_nope"})
            assert bad.status_code == 401, (method, path)
            for role in (*ROLES, RUNNER):
                r = http.request(
                    method, url, json={}, headers={"Authorization": f"Bearer {tokens[role]}"}
                )
                if RUNNER in (role, needed):
                    refused = role != needed
                else:
                    refused = needed == "agent" or ROLES.index(role) < ROLES.index(needed)
                if refused:
                    assert r.status_code == 403, (method, path, role, r.text)
                    assert needed in r.json()["detail"], r.text
                else:
                    assert r.status_code not in (401, 403), (method, path, role, r.text)


def test_revoked_token_is_refused(server: ServerProcess) -> None:
    created = server.post("/api/tokens", {"name": "ci", "role": "deployer"})
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{server.url}/api/apps", headers=headers).status_code == 200
    assert server.http.delete(f"/api/tokens/{created['id']}").status_code == 200
    assert httpx.get(f"{server.url}/api/apps", headers=headers).status_code == 401


def test_docs_and_health_are_public(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"


def test_first_start_prints_an_admin_token_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = ServerProcess(tmp_path / "fresh", env={"CONVEYOR_ADMIN_TOKEN": ""})
    try:
        first.start()
        first.stop()
        printed = re.findall(r"admin token \(shown once, keep it safe\): (cvy_\S+)", first.log())
        assert len(printed) == 1
        token = printed[0]
        first.start()  # a second start prints nothing new
        assert len(re.findall(r"admin token", first.log())) == 1
        r = httpx.get(f"{first.url}/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.json() == {"name": "admin", "role": "admin"}
    finally:
        first.stop()
        first.http.close()
