"""Commit statuses for pull-request runs: which to post, and each forge's request shape.

Pure functions; reporter.py does the posting. The shapes follow each forge's documented
API (see the README, "Pull requests"):

- GitHub: REST "Create a commit status", POST /repos/{owner}/{repo}/statuses/{sha},
  `Authorization: Bearer`, JSON state (error|failure|pending|success), target_url,
  description, context.
- GitLab: "Commits API: set the pipeline status of a commit", POST
  /projects/:id/statuses/:sha, `PRIVATE-TOKEN`, state (pending|running|success|failed|
  canceled), target_url, description, name.
- Gitea: "repoCreateStatus", POST /repos/{owner}/{repo}/statuses/{sha},
  `Authorization: token …`, JSON CreateStatusOption: state (pending|success|error|
  failure), target_url, description, context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

TOKEN_SECRET = "FORGE_TOKEN"  # the app's secret holding the forge's API token
DESCRIPTION_LIMIT = 140  # GitHub refuses longer descriptions
FINAL = ("success", "failure", "error")

DEFAULT_API = {"github": "https://api.github.com", "gitlab": "https://gitlab.com/api/v4"}

# conveyor's kinds of status -> each forge's state
_STATES: dict[str, dict[str, str]] = {
    "github": {"running": "pending"},
    "gitea": {"running": "pending"},
    "gitlab": {"failure": "failed", "error": "canceled"},
}


def forge_state(forge: str, kind: str) -> str:
    """The state a forge's API takes for a kind of status (pending, running, success,
    failure, error)."""
    return _STATES.get(forge, {}).get(kind, kind)


def desired(run_state: str) -> str:
    """The kind of status a run in this state should show on its commit."""
    return {
        "queued": "pending",
        "running": "running",
        "succeeded": "success",
        "failed": "failure",
    }.get(run_state, "error")  # cancelled, superseded


def next_posts(forge: str, reported: str | None, want: str) -> list[str]:
    """The statuses to post, in order, to go from the last one posted to the one wanted.

    A pending status always comes first, so the forge shows that the run was picked up
    even when it ended before the reporter looked; a status the forge would show the same
    as the one before it (GitHub has no "running") is not posted again; nothing is posted
    after a final status.
    """
    if reported in FINAL:
        return []
    chain = ["pending", want] if reported is None and want != "pending" else [want]
    posts: list[str] = []
    last = forge_state(forge, reported) if reported is not None else None
    for kind in chain:
        state = forge_state(forge, kind)
        if state != last:
            posts.append(kind)
            last = state
    return posts


def describe(kind: str, reason: str | None) -> str:
    """The status's one-line description (at most DESCRIPTION_LIMIT characters)."""
    text = {
        "pending": "waiting to run the tests",
        "running": "running the tests",
        "success": "the tests passed",
    }.get(kind) or (reason or ("the tests failed" if kind == "failure" else "the run stopped"))
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


@dataclass(frozen=True)
class StatusRequest:
    """One POST to a forge's API."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def status_request(
    forge: str,
    api: str,
    project: str,
    sha: str,
    token: str,
    kind: str,
    *,
    description: str,
    target_url: str,
    context: str,
) -> StatusRequest:
    """The request that sets a commit status on a forge."""
    base = api.rstrip("/")
    state = forge_state(forge, kind)
    body: dict[str, Any] = {"state": state, "target_url": target_url, "description": description}
    if forge == "gitlab":
        return StatusRequest(
            url=f"{base}/projects/{quote(project, safe='')}/statuses/{sha}",
            headers={"PRIVATE-TOKEN": token},
            body=body | {"name": context},
        )
    path = "/".join(quote(part, safe="") for part in project.split("/", 1))
    if forge == "github":
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    elif forge == "gitea":
        headers = {"Authorization": f"token {token}"}
    else:
        raise ValueError(f"unknown forge {forge!r}; expected one of github, gitlab, gitea")
    return StatusRequest(
        url=f"{base}/repos/{path}/statuses/{sha}",
        headers=headers | {"Accept": headers.get("Accept", "application/json")},
        body=body | {"context": context},
    )


def verdict(http_status: int | None) -> str:
    """What to do after an attempt: "sent", "retry" (the forge or the network had a bad
    moment) or "refused" (retrying the same request cannot help)."""
    if http_status is None or http_status == 429 or http_status >= 500:
        return "retry"
    if 200 <= http_status < 300:
        return "sent"
    return "refused"


def refusal(forge: str, http_status: int, detail: str, app: str) -> str:
    """What a refused status says: what the forge answered and what to do."""
    what = f"{forge} answered {http_status}: {detail[:200]}".rstrip(": ")
    if http_status in (401, 403):
        return (
            f"{what}; the token was refused: set one allowed to write commit statuses with "
            f"`conveyor secret set {app} {TOKEN_SECRET}`"
        )
    if http_status == 404:
        return (
            f"{what}; the forge knows no such repository or commit for this token: check "
            f"`conveyor app set {app} --forge-api URL` and the token's access"
        )
    return what
