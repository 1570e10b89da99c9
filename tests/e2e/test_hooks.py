"""Triggers: signed webhooks from three providers, the post-receive hook, polling."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from conveyor.server.hooks.common import hmac_sha256
from tests.helpers import ServerProcess, commit, config, git, make_repo, wait_for


def test_github_signature_matches_githubs_documented_example() -> None:
    # https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    assert (
        hmac_sha256("It's a Secret to Everybody", b"Hello, World!")
        == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.fixture
def shop(server: ServerProcess, tmp_path: Path) -> tuple[ServerProcess, dict[str, str], str]:
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"conveyor.yml": config("shop", ["true"])})
    app = server.add_app("shop", repo)
    return server, app, sha


def runs(server: ServerProcess) -> list[dict[str, object]]:
    result: list[dict[str, object]] = server.get("/api/runs", params={"app": "shop"})
    return result


def github_post(
    server: ServerProcess,
    body: bytes,
    secret: str,
    *,
    delivery: str | None = None,
    event: str = "push",
    signature: str | None = None,
) -> httpx.Response:
    sig = (
        signature
        if signature is not None
        else "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    )
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    if sig:
        headers["X-Hub-Signature-256"] = sig
    return httpx.post(f"{server.url}/hooks/github/shop", content=body, headers=headers)


def test_github_push_signed_is_accepted_wrong_or_missing_is_refused(shop) -> None:  # type: ignore[no-untyped-def]
    server, app, sha = shop
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "pusher": {"name": "ada"}}).encode()
    assert github_post(server, body, "wrong secret").status_code == 401
    assert github_post(server, body, app["webhook_secret"], signature="").status_code == 401
    assert (
        github_post(
            server,
            body + b" ",
            app["webhook_secret"],
            signature="sha256=" + hmac_sha256(app["webhook_secret"], body),
        ).status_code
        == 401
    )
    assert runs(server) == []

    delivery = str(uuid.uuid4())
    r = github_post(server, body, app["webhook_secret"], delivery=delivery)
    assert r.status_code == 202 and r.json()["status"] == "queued", r.text
    run = server.wait_run(r.json()["run"])
    assert (
        run["state"] == "succeeded" and run["trigger"] == "github" and run["triggered_by"] == "ada"
    )
    # redelivery: acknowledged, runs nothing twice
    again = github_post(server, body, app["webhook_secret"], delivery=delivery)
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
    assert len(runs(server)) == 1


def test_only_pushes_to_the_branch_start_runs(shop) -> None:  # type: ignore[no-untyped-def]
    server, app, sha = shop
    secret = app["webhook_secret"]
    for ref in ("refs/tags/v1.0", "refs/heads/feature"):
        body = json.dumps({"ref": ref, "after": sha}).encode()
        r = github_post(server, body, secret)
        assert r.status_code == 202 and r.json()["status"] == "ignored"
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40, "deleted": True}).encode()
    assert github_post(server, body, secret).json()["status"] == "ignored"
    ping = github_post(server, b'{"zen": "hi"}', secret, event="ping")
    assert ping.status_code == 200
    assert runs(server) == []


def test_gitlab_token_and_gitea_signature(shop) -> None:  # type: ignore[no-untyped-def]
    server, app, sha = shop
    secret = app["webhook_secret"]
    gl_body = json.dumps(
        {"ref": "refs/heads/main", "checkout_sha": sha, "user_username": "grace"}
    ).encode()
    gl = f"{server.url}/hooks/gitlab/shop"
    assert (
        httpx.post(gl, content=gl_body, headers={"X-Gitlab-Event": "Push Hook"}).status_code == 401
    )
    assert (
        httpx.post(
            gl, content=gl_body, headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "nope"}
        ).status_code
        == 401
    )
    uid = str(uuid.uuid4())
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": uid}
    r = httpx.post(gl, content=gl_body, headers=headers)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert httpx.post(gl, content=gl_body, headers=headers).json()["status"] == "duplicate"
    tag = httpx.post(
        gl,
        content=gl_body,
        headers={**headers, "X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Event-UUID": "t1"},
    )
    assert tag.json()["status"] == "ignored"

    gt_body = json.dumps(
        {"ref": "refs/heads/main", "after": sha, "pusher": {"login": "linus"}}
    ).encode()
    gt = f"{server.url}/hooks/gitea/shop"
    good = hmac_sha256(secret, gt_body)
    assert httpx.post(gt, content=gt_body, headers={"X-Gitea-Event": "push"}).status_code == 401
    assert (
        httpx.post(
            gt,
            content=gt_body,
            headers={"X-Gitea-Event": "push", "X-Gitea-Signature": hmac_sha256("x", gt_body)},
        ).status_code
        == 401
    )
    r = httpx.post(
        gt,
        content=gt_body,
        headers={"X-Gitea-Event": "push", "X-Gitea-Signature": good, "X-Gitea-Delivery": "d-1"},
    )
    assert r.status_code == 202 and r.json()["status"] == "queued"
    triggers = sorted((str(r["trigger"]), str(r["triggered_by"])) for r in runs(server))
    assert triggers == [("gitea", "linus"), ("gitlab", "grace")]


def test_oversized_and_malformed_bodies_are_refused(shop) -> None:  # type: ignore[no-untyped-def]
    server, app, _ = shop
    big = b"x" * (25 * 1024 * 1024 + 1)
    r = github_post(server, big, app["webhook_secret"])
    assert r.status_code == 413

    # streamed without a length: refused as well
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(26):
            yield b"x" * (1024 * 1024)

    r = httpx.post(
        f"{server.url}/hooks/gitea/shop", content=chunks(), headers={"X-Gitea-Signature": "00"}
    )
    assert r.status_code == 413
    bad = github_post(server, b"not json", app["webhook_secret"])
    assert bad.status_code == 400
    assert httpx.post(f"{server.url}/hooks/github/nope", content=b"{}").status_code == 401
    assert runs(server) == []


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea"])
def test_unknown_app_and_bad_signature_get_the_same_answer(shop, forge: str) -> None:  # type: ignore[no-untyped-def]
    # the webhook routes must not tell a caller without the secret which apps exist
    server, _, sha = shop
    body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    wrong = "not the secret"
    headers = {
        "github": {
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": "sha256=" + hmac_sha256(wrong, body),
        },
        "gitlab": {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": wrong},
        "gitea": {"X-Gitea-Event": "push", "X-Gitea-Signature": hmac_sha256(wrong, body)},
    }[forge]
    known = httpx.post(f"{server.url}/hooks/{forge}/shop", content=body, headers=headers)
    unknown = httpx.post(f"{server.url}/hooks/{forge}/shoq", content=body, headers=headers)
    assert known.status_code == unknown.status_code == 401
    assert known.json()["detail"].replace("'shop'", "'shoq'") == unknown.json()["detail"]
    assert "does not match the secret of an app named 'shoq'" in unknown.json()["detail"]
    assert known.headers["content-length"] == unknown.headers["content-length"]
    assert runs(server) == []


def test_post_receive_hook_in_a_bare_repository_starts_a_run(
    server: ServerProcess, tmp_path: Path
) -> None:
    bare = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    server.add_app("shop", bare)
    script = server.cli("hook-script", "shop")
    assert script.returncode == 0, script.stderr
    hook = bare / "hooks" / "post-receive"
    hook.write_text(script.stdout)
    hook.chmod(0o755)

    work = tmp_path / "work"
    sha = make_repo(work, {"conveyor.yml": config("shop", ["true"])})
    git(work, "remote", "add", "origin", str(bare))
    push = subprocess.run(
        ["git", "push", "origin", "main"],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert push.returncode == 0, push.stderr
    assert "queued" in push.stderr + push.stdout
    found = wait_for(lambda: server.get("/api/runs", params={"app": "shop"}))
    assert found[0]["sha"] == sha and found[0]["trigger"] == "git-hook"
    assert server.wait_run(found[0]["id"])["state"] == "succeeded"

    # a push to another branch notifies nothing
    git(work, "checkout", "-q", "-b", "feature")
    commit(work, {"f": "1"})
    subprocess.run(
        ["git", "push", "-q", "origin", "feature"], cwd=work, check=True, capture_output=True
    )
    assert len(server.get("/api/runs", params={"app": "shop"})) == 1


def test_polling_fallback_notices_a_new_commit(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = make_repo(repo, {"conveyor.yml": config("polled", ["true"])})
    server.add_app("polled", repo, poll_interval=1)
    run = wait_for(lambda: server.get("/api/runs", params={"app": "polled"}), timeout=20)
    assert run[0]["sha"] == first and run[0]["trigger"] == "poll"
    second = commit(repo, {"x": "2"})
    latest = wait_for(
        lambda: [
            r for r in server.get("/api/runs", params={"app": "polled"}) if r["sha"] == second
        ],
        timeout=20,
    )
    assert server.wait_run(latest[0]["id"])["state"] == "succeeded"
    assert len(server.get("/api/runs", params={"app": "polled"})) == 2


def test_polling_can_be_turned_on_later_and_off(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"conveyor.yml": config("later", ["true"])})
    server.add_app("later", repo)
    on = server.cli("app", "set", "later", "--poll", "1", "--json")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout)["poll_interval"] == 1
    found = wait_for(lambda: server.get("/api/runs", params={"app": "later"}), timeout=20)
    assert found[0]["sha"] == sha and found[0]["trigger"] == "poll"
    off = server.cli("app", "set", "later", "--poll", "0")
    assert off.returncode == 0 and "polling off" in off.stdout
    assert server.cli("app", "set", "later").returncode == 2
    assert server.cli("app", "set", "nope", "--poll", "5").returncode == 2
