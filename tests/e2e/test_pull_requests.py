"""Pull requests end to end: a real server gets signed pull/merge request webhooks, tests
the request's head (or the forge's merge result), builds nothing, and posts pending then
success/failure commit statuses to a local forge API on 127.0.63.1 that checks each request
against GitHub's, GitLab's and Gitea's documented shapes."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.forge.receiver import ForgeAPI, Posted
from tests.helpers import ServerProcess, commit, config, git, make_repo, running_server, wait_for

HOST = "127.0.63.1"
TOKEN = "forge-token-1234"


@pytest.fixture
def forge() -> Iterator[ForgeAPI]:
    with ForgeAPI(HOST, TOKEN) as api:
        yield api


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path / "data", env={"CONVEYOR_FORGE_RETRY": "0.2"}) as proc:
        yield proc


class Repo:
    """The app's repository: main, a passing and a failing head, and the refs forges keep."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # the build would leave a file: a pull request's run must never build
        make_repo(path, {"conveyor.yml": config("shop", ["test ! -e broken"], ["touch built"])})
        git(path, "checkout", "-q", "-b", "feature")
        self.good = commit(path, {"feature.txt": "search\n"}, message="add search")
        git(path, "checkout", "-q", "main")
        commit(path, {"other.txt": "main moved on\n"}, message="main moves on")
        git(path, "checkout", "-q", "-b", "merged")
        git(path, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
        self.merge = git(path, "rev-parse", "HEAD")
        git(path, "checkout", "-q", "main")
        git(path, "checkout", "-q", "-b", "bad")
        self.bad = commit(path, {"broken": "yes\n"}, message="break it")
        git(path, "checkout", "-q", "main")

    def ref(self, name: str, sha: str) -> None:
        git(self.path, "update-ref", name, sha)


def github_event(repo: str, number: int, sha: str, action: str = "opened") -> dict[str, Any]:
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": f"change {number}",
            "html_url": f"https://forge.example/{repo}/pull/{number}",
            "head": {"sha": sha, "ref": "feature"},
            "user": {"login": "ada"},
        },
        "repository": {"full_name": repo},
    }


def gitlab_event(project: int, iid: int, sha: str, action: str = "open") -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "user": {"username": "ada"},
        "project": {"id": project},
        "object_attributes": {
            "iid": iid,
            "title": f"change {iid}",
            "url": f"https://forge.example/acme/shop/-/merge_requests/{iid}",
            "action": action,
            "last_commit": {"id": sha},
        },
    }


def deliver(
    server: ServerProcess,
    forge: str,
    app: dict[str, Any],
    event: dict[str, Any],
    delivery: str | None = None,
) -> Any:
    body = json.dumps(event).encode()
    delivery = delivery or str(uuid.uuid4())
    secret = app["webhook_secret"]
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json"}
    if forge == "github":
        headers |= {
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={signature}",
        }
    elif forge == "gitlab":
        headers |= {
            "X-Gitlab-Event": "Merge Request Hook",
            "X-Gitlab-Event-UUID": delivery,
            "X-Gitlab-Token": secret,
        }
    else:
        kind = "pull_request_sync" if event["action"] == "synchronized" else "pull_request"
        headers |= {
            "X-Gitea-Event": kind,
            "X-Gitea-Delivery": delivery,
            "X-Gitea-Signature": signature,
        }
    r = httpx.post(f"{server.url}/hooks/{forge}/{app['name']}", content=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def add_app(server: ServerProcess, name: str, repo: Path, api: str, token: str | None) -> Any:
    app = server.add_app(name, repo, forge_api=api)
    if token is not None:
        r = server.http.put(f"/api/apps/{name}/secrets/FORGE_TOKEN", json={"value": token})
        assert r.status_code == 204, r.text
    return app


def statuses_until_final(forge: ForgeAPI, kind: str, sha: str) -> list[Posted]:
    final = {"success", "failure", "failed", "error", "canceled"}
    return wait_for(
        lambda: (p := forge.of(kind, sha)) and p[-1].body.get("state") in final and p,
        timeout=60,
    )


def test_each_forge_gets_pending_then_the_result_on_the_head(
    server: ServerProcess, forge: ForgeAPI, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "repo")
    repo.ref("refs/pull/7/head", repo.good)
    repo.ref("refs/pull/7/merge", repo.merge)  # GitHub's test merge
    repo.ref("refs/pull/8/head", repo.bad)
    repo.ref("refs/merge-requests/3/head", repo.good)  # GitLab keeps no merge ref here
    repo.ref("refs/merge-requests/4/head", repo.bad)
    repo.ref("refs/pull/9/head", repo.good)
    repo.ref("refs/pull/10/head", repo.bad)
    apps = {
        kind: add_app(server, f"shop-{kind}", repo.path, forge.base(kind), TOKEN)
        for kind in ("github", "gitlab", "gitea")
    }

    cases = [
        (
            "github",
            deliver(server, "github", apps["github"], github_event("acme/shop", 7, repo.good)),
            repo.good,
            "success",
        ),
        (
            "github",
            deliver(
                server,
                "github",
                apps["github"],
                github_event("acme/shop", 8, repo.bad, "synchronize"),
            ),
            repo.bad,
            "failure",
        ),
        (
            "gitlab",
            deliver(server, "gitlab", apps["gitlab"], gitlab_event(42, 3, repo.good)),
            repo.good,
            "success",
        ),
        (
            "gitlab",
            deliver(server, "gitlab", apps["gitlab"], gitlab_event(42, 4, repo.bad, "reopen")),
            repo.bad,
            "failed",
        ),
        (
            "gitea",
            deliver(server, "gitea", apps["gitea"], github_event("acme/shop", 9, repo.good)),
            repo.good,
            "success",
        ),
        (
            "gitea",
            deliver(
                server,
                "gitea",
                apps["gitea"],
                github_event("acme/shop", 10, repo.bad, "synchronized"),
            ),
            repo.bad,
            "failure",
        ),
    ]
    for kind, accepted, sha, result in cases:
        assert accepted["status"] == "queued", accepted
        run = server.wait_run(accepted["run"], timeout=120)
        assert run["state"] == ("succeeded" if result == "success" else "failed"), run
        assert run["release"] is None
        assert [s["kind"] for s in run["steps"]] == ["checkout", "test"], run["steps"]
        pull = run["pull_request"]
        assert pull["forge"] == kind and pull["head_sha"] == sha and run["sha"] == sha
        posted = statuses_until_final(forge, kind, sha)
        states = [p.body["state"] for p in posted]
        assert states[0] == "pending" and states[-1] == result, states
        assert len(states) == (3 if kind == "gitlab" and "running" in states else 2), states
        label = "name" if kind == "gitlab" else "context"
        for p in posted:
            assert p.status == 201
            assert p.body[label] == f"conveyor/shop-{kind}"
            assert p.body["target_url"] == f"{server.url}/runs/{run['id']}"
            assert p.project == ("42" if kind == "gitlab" else "acme/shop")
        # the forge has them; the run's record says so once the reporter heard back
        shown = wait_for(
            lambda r=run: (
                (s := server.get(f"/api/runs/{r['id']}")["pull_request"]["statuses"])
                and all(x["outcome"] != "sending" for x in s)
                and s
            ),
            timeout=30,
        )
        assert [s["outcome"] for s in shown] == ["sent"] * len(posted), shown
    assert forge.problems == []

    # GitHub's merge result was current (a merge of the head): that is what ran
    github_run = server.get(f"/api/runs/{cases[0][1]['run']}")
    assert github_run["pull_request"]["tested_sha"] == repo.merge
    assert server.get(f"/api/runs/{cases[2][1]['run']}")["pull_request"]["tested_sha"] == repo.good
    assert server.get("/api/releases", params={"app": "shop-github"}) == []
    assert not (server.data / "work").exists() or not any((server.data / "work").glob("*/built"))

    listed = server.cli("history", "shop-github", "--runs")
    assert "PR #7" in listed.stdout and "PR #8" in listed.stdout, listed.stdout


def test_a_refused_token_is_recorded_logged_and_shown_and_the_run_stands(
    server: ServerProcess, forge: ForgeAPI, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "repo")
    repo.ref("refs/pull/7/head", repo.good)
    app = add_app(server, "shop", repo.path, forge.base("github"), "revoked-token")
    accepted = deliver(server, "github", app, github_event("acme/shop", 7, repo.good))
    run = server.wait_run(accepted["run"])
    assert run["state"] == "succeeded", run  # the forge's refusal never fails the run

    def statuses() -> Any:
        found = server.get(f"/api/runs/{run['id']}")["pull_request"]["statuses"]
        return len(found) == 2 and all(s["outcome"] != "sending" for s in found) and found

    shown = wait_for(statuses, timeout=60)
    assert [(s["state"], s["outcome"], s["http_status"]) for s in shown] == [
        ("pending", "failed", 401),
        ("success", "failed", 401),
    ]
    assert "conveyor secret set shop FORGE_TOKEN" in shown[0]["error"]
    assert "Bad credentials" in shown[0]["error"]
    assert [p.status for p in forge.of("github", repo.good)] == [401, 401]
    assert forge.problems == []
    assert "commit status not posted" in server.log()

    logs = server.cli("logs", str(run["id"]))
    text = " ".join(logs.stdout.split())
    assert "pull request #7 (github acme/shop)" in text, logs.stdout
    assert "commit status pending: failed (github answered 401" in text, logs.stdout

    with httpx.Client(base_url=server.url) as web:
        web.post("/login", data={"token": server.token})
        page = web.get(f"/runs/{run['id']}").text
    assert "pull request #7" in page and "not posted" in page and "401" in page, page[-3000:]


def test_no_token_no_api_and_events_that_change_no_code(
    server: ServerProcess, forge: ForgeAPI, tmp_path: Path
) -> None:
    repo = Repo(tmp_path / "repo")
    repo.ref("refs/pull/7/head", repo.good)
    app = server.add_app("shop", repo.path)  # GitHub's default API, and no FORGE_TOKEN
    closed = deliver(server, "github", app, github_event("acme/shop", 7, repo.good, "closed"))
    assert closed["status"] == "ignored" and "changes no code" in closed["detail"]
    accepted = deliver(server, "github", app, github_event("acme/shop", 7, repo.good), "d-1")
    again = deliver(server, "github", app, github_event("acme/shop", 7, repo.good), "d-1")
    assert again["status"] == "duplicate", again  # a redelivery runs nothing twice
    run = server.wait_run(accepted["run"], timeout=120)
    assert run["state"] == "succeeded"
    assert len(server.get("/api/runs", params={"app": "shop"})) == 1
    shown = wait_for(
        lambda: (
            (s := server.get(f"/api/runs/{run['id']}")["pull_request"]["statuses"])
            and len(s) == 2
            and all(x["outcome"] != "sending" for x in s)  # both settled, not one in flight
            and s
        ),
        timeout=60,
    )
    assert all(s["outcome"] == "failed" and s["attempts"] == 0 for s in shown), shown
    assert "no FORGE_TOKEN secret for app shop" in shown[0]["error"]

    gitea = server.add_app("shop-gitea", repo.path)  # Gitea has no default API URL
    server.http.put("/api/apps/shop-gitea/secrets/FORGE_TOKEN", json={"value": TOKEN})
    accepted = deliver(server, "gitea", gitea, github_event("acme/shop", 7, repo.good))
    run = server.wait_run(accepted["run"])
    shown = wait_for(
        lambda: (
            (s := server.get(f"/api/runs/{run['id']}")["pull_request"]["statuses"])
            and len(s) == 2
            and s
        ),
        timeout=60,
    )
    assert "no gitea API URL for app shop-gitea" in shown[0]["error"]
    assert "conveyor app set shop-gitea --forge-api" in shown[0]["error"]
    assert forge.posted == []
