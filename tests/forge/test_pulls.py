"""Pull/merge request events read into one shape, and the choice of what to test."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.forge.pulls import (
    PullEvent,
    choose_tested,
    gitea_pull,
    github_pull,
    gitlab_merge_request,
)

HEAD = "a" * 40
MERGE = "b" * 40
BASE = "c" * 40


def github(action: str = "opened", **pull: Any) -> dict[str, Any]:
    return {
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "title": "Add search",
            "html_url": "https://github.com/acme/shop/pull/7",
            "head": {"sha": HEAD, "ref": "search"},
            "user": {"login": "ada"},
            **pull,
        },
        "repository": {"full_name": "acme/shop"},
    }


def gitlab(action: str = "open", **attrs: Any) -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "user": {"username": "ada"},
        "project": {"id": 42, "path_with_namespace": "acme/shop"},
        "object_attributes": {
            "iid": 3,
            "title": "Add search",
            "url": "https://gitlab.com/acme/shop/-/merge_requests/3",
            "action": action,
            "last_commit": {"id": HEAD},
            **attrs,
        },
    }


@pytest.mark.parametrize(
    ("payload", "forge", "expected"),
    [
        (github(), "github", ("acme/shop", 7, "refs/pull/7/head", "refs/pull/7/merge")),
        (
            github("synchronize"),
            "github",
            ("acme/shop", 7, "refs/pull/7/head", "refs/pull/7/merge"),
        ),
        (github("reopened"), "github", ("acme/shop", 7, "refs/pull/7/head", "refs/pull/7/merge")),
        (github("synchronized"), "gitea", ("acme/shop", 7, "refs/pull/7/head", None)),
        (github("opened"), "gitea", ("acme/shop", 7, "refs/pull/7/head", None)),
        (
            gitlab(),
            "gitlab",
            ("42", 3, "refs/merge-requests/3/head", "refs/merge-requests/3/merge"),
        ),
        (
            gitlab("reopen"),
            "gitlab",
            ("42", 3, "refs/merge-requests/3/head", "refs/merge-requests/3/merge"),
        ),
        (
            gitlab("update", oldrev=BASE),
            "gitlab",
            ("42", 3, "refs/merge-requests/3/head", "refs/merge-requests/3/merge"),
        ),
    ],
)
def test_events_that_change_code_are_tested(
    payload: dict[str, Any], forge: str, expected: tuple[str, int, str, str | None]
) -> None:
    read = {"github": github_pull, "gitea": gitea_pull, "gitlab": gitlab_merge_request}[forge]
    pull = read(payload)
    assert isinstance(pull, PullEvent)
    assert (pull.project, pull.number, pull.head_ref, pull.merge_ref) == expected
    assert pull.head_sha == HEAD and pull.forge == forge and pull.author == "ada"
    assert pull.title == "Add search" and pull.url is not None


@pytest.mark.parametrize(
    ("payload", "forge", "why"),
    [
        (github("closed"), "github", "changes no code"),
        (github("labeled"), "github", "changes no code"),
        (github("synchronize"), "gitea", "changes no code"),  # Gitea says "synchronized"
        (github(head={"sha": "not-a-sha"}), "github", "without number"),
        ({"action": "opened"}, "github", "without number"),
        (gitlab("close"), "gitlab", "changes no code"),
        (gitlab("merge"), "gitlab", "changes no code"),
        (gitlab("update"), "gitlab", "without new commits"),  # a title or a label
        (gitlab(last_commit={}), "gitlab", "without object_attributes.iid"),
    ],
)
def test_events_that_change_no_code_say_why(payload: dict[str, Any], forge: str, why: str) -> None:
    read = {"github": github_pull, "gitea": gitea_pull, "gitlab": gitlab_merge_request}[forge]
    result = read(payload)
    assert isinstance(result, str) and why in result


@pytest.mark.parametrize(
    ("merge", "parents", "tested", "says"),
    [
        (None, [], HEAD, "keeps no merge result"),
        (MERGE, [BASE, HEAD], MERGE, "merge result"),
        (MERGE, [BASE, "d" * 40], HEAD, "not updated yet"),  # made before the last push
    ],
)
def test_the_merge_result_is_tested_only_when_it_merges_this_head(
    merge: str | None, parents: list[str], tested: str, says: str
) -> None:
    sha, line = choose_tested(HEAD, merge, parents)
    assert sha == tested and says in line
