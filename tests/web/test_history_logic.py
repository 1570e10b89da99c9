"""The History page's Redeploy offers and the public page's words, as tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from conveyor.protocol import DeploymentOut, EnvironmentStatus
from conveyor.server.web.history import Filters, Redeploy, redeploys
from conveyor.server.web.public import PublicDeployment, public_view, result

T = datetime(2026, 12, 3, 12, 0, 0)


def d(id_: int, env: str, release: str, state: str = "succeeded", **kw: Any) -> DeploymentOut:
    fields: dict[str, Any] = {
        "id": id_,
        "app": "shop",
        "environment": env,
        "release": release,
        "previous_release": None,
        "run": 1,
        "kind": "deploy",
        "strategy": "rolling",
        "state": state,
        "reason": "health check failed: secret-looking output",
        "trigger": "pipeline",
        "triggered_by": "alice",
        "approved_by": "bob",
        "approved_at": T,
        "forced_by": None,
        "force_reason": None,
        "hosts": ["web-1"],
        "step": None,
        "created_at": T,
        "started_at": T,
        "finished_at": T,
        "duration": 1.0,
    }
    return DeploymentOut(**(fields | kw))


ROWS = [  # newest first, as the page lists them
    d(5, "prod", "r3", "failed"),
    d(4, "prod", "r2"),
    d(3, "stage", "r2"),
    d(2, "prod", "r1"),
    d(1, "prod", "r1"),
]


@pytest.mark.parametrize(
    ("serving", "allowed", "expected"),
    [
        # r1 passed its gates: offered once, on its newest row; r2 serves; r3 failed
        (
            {"prod": "r2", "stage": "r2"},
            {("r1", "prod"): "back to r1", ("r3", "prod"): "r3", ("r2", "prod"): "r2"},
            {2: Redeploy("r1", "prod", "back to r1")},
        ),
        ({"prod": "r2", "stage": "r2"}, {}, {}),  # the gates refuse everything
        (
            {"prod": "r1", "stage": None},
            {("r2", "prod"): "e", ("r2", "stage"): "f"},
            {4: Redeploy("r2", "prod", "e"), 3: Redeploy("r2", "stage", "f")},
        ),
    ],
)
def test_redeploy_is_offered_for_an_earlier_release_that_passes(
    serving: dict[str, str | None],
    allowed: dict[tuple[str, str], str],
    expected: dict[int, Redeploy],
) -> None:
    assert redeploys(ROWS, serving, allowed) == expected


def test_filters_ignore_what_the_page_never_offers() -> None:
    assert Filters.read(" prod ", "failed", "api") == Filters("prod", "failed", "api")
    assert Filters.read("", "exploded", "cron") == Filters()
    assert Filters("prod", "", "api").query() == "environment=prod&trigger=api"


@pytest.mark.parametrize(
    ("deployment", "rolled_back", "word"),
    [
        (d(1, "prod", "r1"), False, "deployed"),
        (d(1, "prod", "r1", kind="rollback"), False, "rolled back"),
        (d(1, "prod", "r1", "failed"), True, "failed, rolled back"),
        (d(1, "prod", "r1", "failed"), False, "failed"),
        (d(1, "prod", "r1", "running"), False, "in progress"),
        (d(1, "prod", "r1", "aborting"), False, "in progress"),
        (d(1, "prod", "r1", "waiting"), False, "waiting"),
        (d(1, "prod", "r1", "cancelled"), False, "cancelled"),
        (d(1, "prod", "r1", "superseded"), False, "superseded"),
    ],
)
def test_a_public_result_is_a_word_with_nothing_of_why(
    deployment: DeploymentOut, rolled_back: bool, word: str
) -> None:
    assert result(deployment, rolled_back) == word


def test_the_public_view_keeps_no_host_reason_or_person() -> None:
    env = EnvironmentStatus(
        name="prod",
        strategy="rolling",
        release="r2",
        hosts=[],
        deployment=d(6, "prod", "r3", "running"),
        last=d(5, "prod", "r3", "failed"),
    )
    view = public_view("shop", [env], {"prod": T}, [d(5, "prod", "r3", "failed")], {5})
    assert view.environments[0].release == "r2" and view.environments[0].underway
    assert view.recent == [PublicDeployment("prod", "r3", "failed, rolled back", T)]
    text = repr(view)
    for leak in ("web-1", "alice", "bob", "secret", "health check", "pipeline"):
        assert leak not in text
