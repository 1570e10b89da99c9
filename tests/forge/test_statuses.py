"""Which commit statuses to post, and the request each forge documents."""

from __future__ import annotations

import pytest

from conveyor.forge.statuses import (
    describe,
    desired,
    forge_state,
    next_posts,
    refusal,
    status_request,
    verdict,
)

SHA = "a" * 40


@pytest.mark.parametrize(
    ("run_state", "kind"),
    [
        ("queued", "pending"),
        ("running", "running"),
        ("succeeded", "success"),
        ("failed", "failure"),
        ("cancelled", "error"),
        ("superseded", "error"),
    ],
)
def test_a_run_state_wants_a_kind_of_status(run_state: str, kind: str) -> None:
    assert desired(run_state) == kind


@pytest.mark.parametrize(
    ("forge", "reported", "want", "posts"),
    [
        ("github", None, "pending", ["pending"]),
        ("github", None, "success", ["pending", "success"]),  # ended before the first look
        ("github", None, "running", ["pending"]),  # GitHub has no running: pending says it
        ("github", "pending", "running", []),
        ("github", "pending", "failure", ["failure"]),
        ("github", "success", "failure", []),  # nothing after a final status
        ("gitlab", None, "running", ["pending", "running"]),
        ("gitlab", "running", "success", ["success"]),
        ("gitlab", "pending", "pending", []),
        ("gitea", None, "failure", ["pending", "failure"]),
        ("gitea", "error", "success", []),
    ],
)
def test_next_posts(forge: str, reported: str | None, want: str, posts: list[str]) -> None:
    assert next_posts(forge, reported, want) == posts


@pytest.mark.parametrize(
    ("forge", "kind", "state"),
    [
        ("github", "running", "pending"),
        ("github", "failure", "failure"),
        ("github", "error", "error"),
        ("gitea", "running", "pending"),
        ("gitea", "success", "success"),
        ("gitlab", "running", "running"),
        ("gitlab", "failure", "failed"),
        ("gitlab", "error", "canceled"),
        ("gitlab", "success", "success"),
    ],
)
def test_each_forge_names_its_states(forge: str, kind: str, state: str) -> None:
    assert forge_state(forge, kind) == state


def test_github_shape() -> None:
    r = status_request(
        "github",
        "https://api.github.com/",
        "acme/shop",
        SHA,
        "t0k",
        "success",
        description="the tests passed",
        target_url="http://c/runs/1",
        context="conveyor/shop",
    )
    assert r.url == f"https://api.github.com/repos/acme/shop/statuses/{SHA}"
    assert r.headers["Authorization"] == "Bearer t0k"
    assert r.headers["Accept"] == "application/vnd.github+json"
    assert r.body == {
        "state": "success",
        "target_url": "http://c/runs/1",
        "description": "the tests passed",
        "context": "conveyor/shop",
    }


def test_gitlab_shape() -> None:
    r = status_request(
        "gitlab",
        "https://gitlab.com/api/v4",
        "42",
        SHA,
        "t0k",
        "failure",
        description="x",
        target_url="http://c/runs/1",
        context="conveyor/shop",
    )
    assert r.url == f"https://gitlab.com/api/v4/projects/42/statuses/{SHA}"
    assert r.headers["PRIVATE-TOKEN"] == "t0k" and "Authorization" not in r.headers
    assert r.body == {
        "state": "failed",
        "target_url": "http://c/runs/1",
        "description": "x",
        "name": "conveyor/shop",
    }


def test_gitea_shape() -> None:
    r = status_request(
        "gitea",
        "https://git.example/api/v1",
        "acme/shop",
        SHA,
        "t0k",
        "pending",
        description="x",
        target_url="http://c/runs/1",
        context="conveyor/shop",
    )
    assert r.url == f"https://git.example/api/v1/repos/acme/shop/statuses/{SHA}"
    assert r.headers["Authorization"] == "token t0k"
    assert r.body["state"] == "pending" and r.body["context"] == "conveyor/shop"


def test_an_unknown_forge_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown forge"):
        status_request(
            "svn", "x", "a/b", SHA, "t", "pending", description="", target_url="", context=""
        )


@pytest.mark.parametrize(
    ("status", "what"),
    [
        (201, "sent"),
        (200, "sent"),
        (None, "retry"),
        (500, "retry"),
        (503, "retry"),
        (429, "retry"),
        (401, "refused"),
        (403, "refused"),
        (404, "refused"),
        (422, "refused"),
    ],
)
def test_verdict(status: int | None, what: str) -> None:
    assert verdict(status) == what


def test_descriptions_fit_githubs_limit_and_say_why() -> None:
    assert describe("success", None) == "the tests passed"
    assert describe("failure", "test step 'pytest' failed (exit 1)") == (
        "test step 'pytest' failed (exit 1)"
    )
    assert len(describe("failure", "x" * 500)) == 140


def test_a_refused_token_says_what_to_do() -> None:
    text = refusal("github", 401, '{"message": "Bad credentials"}', "shop")
    assert "401" in text and "Bad credentials" in text
    assert "conveyor secret set shop FORGE_TOKEN" in text
