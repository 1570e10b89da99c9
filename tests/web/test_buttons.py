"""The Environment page's buttons, named by what they do: tables over the records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.protocol import DeploymentOut, DeploymentStepOut, StepControl
from conveyor.server.web.buttons import RollbackFacts, canary_buttons, rollback_button, time_left
from conveyor.server.web.render import code_spans
from conveyor.server.web.scales import PALETTE, release_colour, release_colours

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def facts(**changes: Any) -> RollbackFacts:
    base: dict[str, Any] = {
        "environment": "production",
        "serving": "bbbbbbb-2",
        "target": "aaaaaaa-1",
        "none": None,
        "target_newer": False,
        "failed_release": None,
        "failed_id": None,
        "acting": None,
        "hosts": "web-1",
    }
    return RollbackFacts(**(base | changes))


def step(position: int, kind: str, state: str, weight: int | None = None, **extra: Any) -> Any:
    return DeploymentStepOut(
        id=position + 1,
        position=position,
        kind=kind,
        name=f"{weight}% of traffic to ccccccc-3" if weight is not None else kind,
        weight=weight,
        state=state,
        reason=None,
        hosts=["web-1"],
        targets={},
        started_at=None,
        finished_at=None,
        duration=None,
        **extra,
    )


def deployment(steps: list[Any], state: str = "running", **changes: Any) -> DeploymentOut:
    return DeploymentOut.model_validate(
        {
            "id": 7,
            "app": "shop",
            "environment": "production",
            "release": "ccccccc-3",
            "previous_release": "bbbbbbb-2",
            "run": 3,
            "kind": "deploy",
            "strategy": "canary",
            "state": state,
            "reason": None,
            "trigger": "pipeline",
            "triggered_by": "run 3",
            "approved_by": None,
            "approved_at": None,
            "forced_by": None,
            "force_reason": None,
            "step": None,
            "hosts": ["web-1"],
            "created_at": NOW,
            "started_at": NOW,
            "finished_at": None,
            "duration": None,
            "steps": steps,
        }
        | changes
    )


RUNNING = deployment([], state="running")


A, B, C = "aaaaaaa-1", "bbbbbbb-2", "ccccccc-3"
FAILED_B = (
    f"No rollback: the release served before {A} is {B}, which just failed here "
    "(deployment #9): nothing older to go back to."
)
NOTHING = "nothing was deployed to production of shop yet"


@pytest.mark.parametrize(
    ("given", "label", "disabled"),
    [
        (facts(), f"Roll back to {A} (served before {B})", None),
        # mid-deployment: back to what served before it began
        (facts(target=B, acting=RUNNING), f"Roll back to {B} (serving before #7)", None),
        # a failed deployment never names itself: the target comes from what served
        (facts(failed_release=C, failed_id=7), f"Roll back to {A} (served before {B})", None),
        # after a manual rollback, "served before" is newer: named as the move forward it is
        (facts(serving=A, target=B, target_newer=True), f"Deploy {B} again", None),
        # ... and when that newer release just failed here, no button pretends otherwise
        (
            facts(serving=A, target=B, target_newer=True, failed_release=B, failed_id=9),
            "Roll back",
            FAILED_B,
        ),
        (facts(target=None, none=NOTHING), "Roll back", f"No rollback: {NOTHING}."),
        (facts(target=B), "Roll back", f"No rollback: {B} serves production already."),
    ],
)
def test_the_rollback_button_names_where_it_leads(
    given: RollbackFacts, label: str, disabled: str | None
) -> None:
    button = rollback_button(given)
    assert (button.label, button.disabled) == (label, disabled)
    if disabled is None:
        assert button.fields == {"to": given.target} and button.help


PREVIEW = step(0, "preview", "succeeded", 0)
AT_25 = step(1, "weight", "running", 25, pause=30.0, left=12.4)
AT_50 = step(2, "weight", "pending", 50, pause=30.0)
AT_100 = step(3, "weight", "pending", 100)
VERIFY = step(4, "verify", "pending")
PAUSED = StepControl(paused_by="dan", paused_at=1.0)


AT_25_PAUSED = step(1, "weight", "running", 25, pause=30.0, control=PAUSED)
AT_50_LAST = step(2, "weight", "running", 50, pause=30.0)
NOT_CANARY = (
    "the deployment is at its preview step (0% of traffic to ccccccc-3), not a canary traffic step"
)


@pytest.mark.parametrize(
    ("d", "buttons"),
    [
        (
            deployment([PREVIEW, AT_25, AT_50, AT_100, VERIFY]),
            [
                ("step-promote", "Promote now: 50% of traffic next", None),
                ("step-promote-full", "Promote to 100%", None),
                ("step-pause", "Pause", None),
            ],
        ),
        # the last canary step: promote leads to 100%, no separate "to 100%"
        (
            deployment([PREVIEW, AT_50_LAST, AT_100]),
            [
                ("step-promote", "Promote now: 100% of traffic next", None),
                ("step-pause", "Pause", None),
            ],
        ),
        (
            deployment([PREVIEW, AT_25_PAUSED, AT_50, AT_100]),
            [
                ("step-promote", "Promote now: 50% of traffic next", None),
                ("step-promote-full", "Promote to 100%", None),
                ("step-resume", "Resume", None),
            ],
        ),
        # not at a canary traffic step: shown, disabled, saying why
        (
            deployment([step(0, "preview", "running", 0), AT_50]),
            [("step-promote", "Promote step", NOT_CANARY), ("step-pause", "Pause", NOT_CANARY)],
        ),
        (deployment([PREVIEW, AT_25], state="rolling_back"), []),
        (deployment([PREVIEW, AT_25], strategy="rolling"), []),
    ],
)
def test_canary_buttons(d: DeploymentOut, buttons: list[tuple[str, str, str | None]]) -> None:
    assert [(a.name, a.label, a.disabled) for a in canary_buttons(d)] == buttons


def test_time_left_in_the_step_underway() -> None:
    assert time_left(deployment([PREVIEW, AT_25])) == "12 s left in 25% of traffic to ccccccc-3"
    paused = step(1, "weight", "running", 25, pause=30.0, left=12.4, control=PAUSED)
    assert time_left(deployment([PREVIEW, paused])) == (
        "paused by dan: 12 s left in 25% of traffic to ccccccc-3 on resume"
    )
    assert time_left(deployment([PREVIEW])) is None


def test_each_release_keeps_its_colour() -> None:
    names = [f"{i:07x}-{i % 3 + 1}" for i in range(200)]
    colours = [release_colour(n) for n in names]
    assert colours == [release_colour(n) for n in names]  # stable
    assert set(colours) == {f"rel-{i}" for i in range(PALETTE)}  # spread over the palette


def test_releases_shown_together_never_share_a_colour() -> None:
    names = [f"{i:07x}-1" for i in range(50)]
    first = names[0]
    clash = next(n for n in names[1:] if release_colour(n) == release_colour(first))
    colours = release_colours([first, None, clash, first])
    # the one listed first (the release serving) keeps its own; the other moves on
    assert colours[first] == release_colour(first)
    assert colours[clash] != colours[first]
    assert len(release_colours(names[:PALETTE])) == PALETTE
    assert len(set(release_colours(names[:PALETTE]).values())) == PALETTE


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("run `conveyor token create NAME`", "run <code>conveyor token create NAME</code>"),
        ("<b>`x`</b>", "&lt;b&gt;<code>x</code>&lt;/b&gt;"),
        ("a lone ` stays", "a lone ` stays"),
    ],
)
def test_messages_show_code_spans_as_code(text: str, html: str) -> None:
    assert str(code_spans(text)) == html
