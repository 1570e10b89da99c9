"""Pull/merge request webhook events of GitHub, GitLab and Gitea, read into one shape.

Pure functions of the parsed body: what to test (the head commit, the refs to fetch it
and the forge's merge result by), or why the event starts nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_COMMIT = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
FORGES = ("github", "gitlab", "gitea")

# the actions that change what a request would merge (others: labels, titles, reviews)
GITHUB_ACTIONS = ("opened", "synchronize", "reopened")
GITEA_ACTIONS = ("opened", "synchronized", "reopened")
GITLAB_ACTIONS = ("open", "reopen", "update")


@dataclass(frozen=True)
class PullEvent:
    """A pull (merge) request whose head should be tested."""

    forge: str  # github | gitlab | gitea
    project: str  # "owner/repo"; GitLab: the project's numeric id
    number: int
    head_sha: str
    head_ref: str  # where the forge keeps the head in the base repository
    merge_ref: str | None  # where it keeps the merge result, when it does
    title: str
    url: str | None
    author: str
    action: str


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _sha(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and _COMMIT.fullmatch(value) else None


def github_pull(payload: dict[str, Any], forge: str = "github") -> PullEvent | str:
    """A GitHub `pull_request` event (Gitea's `pull_request` and `pull_request_sync` share
    the shape): a PullEvent, or why it runs nothing."""
    action = str(payload.get("action", ""))
    wanted = GITHUB_ACTIONS if forge == "github" else GITEA_ACTIONS
    if action not in wanted:
        return f"pull request action {action[:40]!r} changes no code; runs on {', '.join(wanted)}"
    pull = _dict(payload.get("pull_request"))
    number = _number(payload.get("number")) or _number(pull.get("number"))
    head = _dict(pull.get("head"))
    sha = _sha(head.get("sha"))
    project = _dict(payload.get("repository")).get("full_name")
    if number is None or sha is None or not isinstance(project, str) or "/" not in project:
        return "pull request event without number, pull_request.head.sha or repository.full_name"
    return PullEvent(
        forge=forge,
        project=project[:255],
        number=number,
        head_sha=sha,
        head_ref=f"refs/pull/{number}/head",
        # GitHub keeps a test merge at refs/pull/N/merge; Gitea keeps the head only
        merge_ref=f"refs/pull/{number}/merge" if forge == "github" else None,
        title=str(pull.get("title") or "")[:1000],
        url=_url(pull.get("html_url")),
        author=str(_dict(pull.get("user")).get("login") or _sender(payload))[:255],
        action=action,
    )


def gitea_pull(payload: dict[str, Any]) -> PullEvent | str:
    return github_pull(payload, forge="gitea")


def gitlab_merge_request(payload: dict[str, Any]) -> PullEvent | str:
    """A GitLab `Merge Request Hook`: a PullEvent, or why it runs nothing."""
    attrs = _dict(payload.get("object_attributes"))
    action = str(attrs.get("action", ""))
    if action not in GITLAB_ACTIONS:
        return (
            f"merge request action {action[:40]!r} changes no code; "
            f"runs on {', '.join(GITLAB_ACTIONS)}"
        )
    if action == "update" and not attrs.get("oldrev"):
        # GitLab sets oldrev only when the update pushed commits (else: a title, a label)
        return "merge request update without new commits (no object_attributes.oldrev)"
    iid = _number(attrs.get("iid"))
    sha = _sha(_dict(attrs.get("last_commit")).get("id"))
    project = _number(_dict(payload.get("project")).get("id")) or _number(
        attrs.get("target_project_id")
    )
    if iid is None or sha is None or project is None:
        return "merge request event without object_attributes.iid, last_commit.id or project.id"
    return PullEvent(
        forge="gitlab",
        project=str(project),
        number=iid,
        head_sha=sha,
        head_ref=f"refs/merge-requests/{iid}/head",
        merge_ref=f"refs/merge-requests/{iid}/merge",
        title=str(attrs.get("title") or "")[:1000],
        url=_url(attrs.get("url")),
        author=str(_dict(payload.get("user")).get("username") or "gitlab")[:255],
        action=action,
    )


def _url(value: Any) -> str | None:
    return (
        value[:2000]
        if isinstance(value, str) and value.startswith(("https://", "http://"))
        else None
    )


def _sender(payload: dict[str, Any]) -> str:
    return str(_dict(payload.get("sender")).get("login") or "")


def choose_tested(
    head_sha: str, merge_sha: str | None, merge_parents: list[str]
) -> tuple[str, str]:
    """The commit to test, and a line saying why: the forge's merge result when it is a merge
    of this head (a stale one, made before the last push, is not), else the head itself."""
    if merge_sha is None:
        return head_sha, f"testing the head {head_sha[:12]} (the forge keeps no merge result)"
    if head_sha not in merge_parents:
        return head_sha, (
            f"testing the head {head_sha[:12]}: the forge's merge result {merge_sha[:12]} "
            "is not a merge of it (not updated yet after the last push)"
        )
    return merge_sha, f"testing the merge result {merge_sha[:12]} of head {head_sha[:12]}"
