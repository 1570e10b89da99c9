"""What each notification says: what, where, release, why, what was done, and a link."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conveyor.config import Notify
from conveyor.notify.messages import (
    DeploymentFacts,
    Message,
    RollbackFacts,
    RunFacts,
    approval_needed,
    deployment_ended,
    recipients,
    run_failed,
)

SHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
URL = "http://ci.example:8080"

FAILED = DeploymentFacts(
    id=12,
    app="shop",
    environment="production",
    kind="deploy",
    state="failed",
    release="1a2b3c4-3",
    sha=SHA,
    link=f"{URL}/deployments/12",
    hosts=["web-1", "web-2", "web-3"],
    strategy="canary",
    previous_release="0f0f0f0-2",
    reason="analysis failed: error rate 5.1% over the 1% ceiling (812 requests)",
    failed_step="weight 25%",
    rollback=RollbackFacts("succeeded", ["web-1", "web-2", "web-3"], "0f0f0f0-2"),
    run=7,
    trigger="pipeline",
    triggered_by="run 7",
)
NOT_TOUCHED = replace(
    FAILED,
    rollback=None,
    failed_step=None,
    hosts=["web-1", "web-9"],
    reason="unknown host(s) web-9: register them with `conveyor host add`; nothing changed",
)
ROLLBACK_BROKEN = replace(
    FAILED,
    rollback=RollbackFacts(
        "failed", ["web-1", "web-2"], "0f0f0f0-2", "web-2 had not confirmed after 120 s"
    ),
    hosts=["web-1", "web-2"],
)
SUCCEEDED = replace(
    FAILED, state="succeeded", reason=None, failed_step=None, rollback=None, strategy="rolling"
)
FIRST = replace(SUCCEEDED, previous_release=None)
MANUAL_ROLLBACK = replace(
    SUCCEEDED,
    id=13,
    kind="rollback",
    release="0f0f0f0-2",
    previous_release="1a2b3c4-3",
    strategy="switch",
    trigger="rollback",
    triggered_by="admin",
    link=f"{URL}/deployments/13",
)
CONTRACT = replace(
    SUCCEEDED,
    id=14,
    kind="contract",
    hosts=["web-1"],
    previous_release="1a2b3c4-3",
    strategy="contract",
    trigger="contract",
    triggered_by="conveyor",
    link=f"{URL}/deployments/14",
)
WAITING = replace(
    FAILED,
    state="waiting",
    reason="waiting for approval: conveyor approve 7",
    failed_step=None,
    rollback=None,
)
WAITING_INVENTORY = replace(WAITING, hosts=[], inventory="./inventory.sh")

RUN = RunFacts(
    id=5,
    app="shop",
    sha=SHA,
    link=f"{URL}/runs/5",
    state="failed",
    reason="test step 'unit tests' failed (exit 1)",
    ref="refs/heads/main",
    failed_step="test step 'unit tests'",
    log_tail=["FAIL: test_checkout (tests.test_cart.Cart)", "FAILED (failures=1)"],
    trigger="push",
    triggered_by="alice",
)


def lines(message: Message) -> dict[str, str]:
    """The body's labelled lines (continuation lines stay with their label)."""
    found: dict[str, str] = {}
    label = ""
    for line in message.body.splitlines():
        head, sep, rest = line.partition(": ")
        if sep and head in ("What", "Where", "Release", "Why", "Done", "Next", "Link"):
            label = head
            found[label] = rest
        else:
            found[label] += "\n" + line
    return found


CASES = [
    pytest.param(
        deployment_ended(FAILED),
        {"failure", "rollback"},
        ["shop", "production", "1a2b3c4-3", "rolled back to 0f0f0f0-2"],
        {
            "What": ["deployment 12", "failed at step 'weight 25%'", "rolled back automatically"],
            "Where": ["app shop", "environment production", "hosts web-1, web-2, web-3"],
            "Release": ["1a2b3c4-3", "commit 1a2b3c4"],
            "Why": ["analysis failed: error rate 5.1% over the 1% ceiling"],
            "Done": ["rolled back web-1, web-2, web-3 to 0f0f0f0-2"],
            "Link": [f"{URL}/deployments/12"],
        },
        id="failed-and-rolled-back",
    ),
    pytest.param(
        deployment_ended(ROLLBACK_BROKEN),
        {"failure", "rollback"},
        ["rollback did not complete"],
        {
            "What": ["the automatic rollback did not complete"],
            "Where": ["hosts web-1, web-2"],
            "Done": [
                "tried to roll back web-1, web-2 to 0f0f0f0-2",
                "failed: web-2 had not confirmed after 120 s",
            ],
            "Link": [f"{URL}/deployments/12"],
        },
        id="rollback-incomplete",
    ),
    pytest.param(
        deployment_ended(NOT_TOUCHED),
        {"failure"},
        ["shop production", "1a2b3c4-3", "nothing changed"],
        {
            "Where": ["hosts web-1, web-9"],
            "Release": ["1a2b3c4-3, commit 1a2b3c4"],
            "Why": ["unknown host(s) web-9"],
            "Done": ["no host was changed", "keeps serving 0f0f0f0-2"],
            "Link": [f"{URL}/deployments/12"],
        },
        id="failed-before-touching",
    ),
    pytest.param(
        deployment_ended(SUCCEEDED),
        {"success"},
        ["shop production", "release 1a2b3c4-3 deployed"],
        {
            "What": ["deployment 12", "succeeded"],
            "Where": ["app shop", "environment production", "hosts web-1, web-2, web-3"],
            "Release": ["1a2b3c4-3, commit 1a2b3c4"],
            "Why": ["rolling deployment", "promoted by run 7"],
            "Done": ["web-1, web-2, web-3 now serve 1a2b3c4-3 (previously 0f0f0f0-2)"],
            "Link": [f"{URL}/deployments/12"],
        },
        id="succeeded",
    ),
    pytest.param(
        deployment_ended(FIRST),
        {"success"},
        ["deployed"],
        {"Done": ["now serve 1a2b3c4-3 (the first release)"]},
        id="first-release",
    ),
    pytest.param(
        deployment_ended(MANUAL_ROLLBACK),
        {"success", "rollback"},
        ["shop production", "rolled back to 0f0f0f0-2"],
        {
            "What": ["rollback 13 of production to release 0f0f0f0-2 succeeded"],
            "Where": ["hosts web-1, web-2, web-3"],
            "Release": ["0f0f0f0-2"],
            "Why": ["asked by admin"],
            "Done": ["switched web-1, web-2, web-3 from 1a2b3c4-3 back to 0f0f0f0-2"],
            "Link": [f"{URL}/deployments/13"],
        },
        id="manual-rollback",
    ),
    pytest.param(
        deployment_ended(replace(MANUAL_ROLLBACK, state="failed", reason="switch failed")),
        {"failure", "rollback"},
        ["rollback of 0f0f0f0-2 failed"],
        {"What": ["rollback 13"], "Why": ["switch failed"]},
        id="manual-rollback-failed",
    ),
    pytest.param(
        deployment_ended(CONTRACT),
        {"success"},
        ["shop production", "contract migration of 1a2b3c4-3 applied"],
        {
            "What": ["contract 14: migrations.contract of release 1a2b3c4-3 ran in production"],
            "Why": ["no host serves or keeps warm a release older than 1a2b3c4-3"],
            "Done": ["the migration ran on web-1; production keeps serving 1a2b3c4-3"],
        },
        id="contract",
    ),
    pytest.param(
        deployment_ended(replace(CONTRACT, state="failed", reason="migrations.contract failed")),
        {"failure"},
        ["contract migration of 1a2b3c4-3 failed"],
        {"What": ["contract migration 14 of release 1a2b3c4-3"]},
        id="contract-failed",
    ),
    pytest.param(
        approval_needed(WAITING),
        {"approval"},
        ["shop production", "1a2b3c4-3", "waits for approval"],
        {
            "What": ["deployment 12", "needs an approval"],
            "Where": ["app shop", "environment production", "hosts web-1, web-2, web-3"],
            "Release": ["1a2b3c4-3, commit 1a2b3c4"],
            "Why": ["approval: required"],
            "Done": ["nothing changed yet", "keeps serving 0f0f0f0-2"],
            "Next": ["conveyor approve 7"],
            "Link": [f"{URL}/deployments/12"],
        },
        id="approval",
    ),
    pytest.param(
        approval_needed(WAITING_INVENTORY),
        {"approval"},
        ["waits for approval"],
        {"Where": ["the hosts printed by `./inventory.sh`"]},
        id="approval-inventory",
    ),
    pytest.param(
        run_failed(RUN),
        {"failure"},
        ["shop", "run 5 failed at test step 'unit tests'"],
        {
            "What": ["run 5 of shop failed", "commit 1a2b3c4 on main", "push by alice"],
            "Where": ["app shop", "no environment and no host was touched"],
            "Release": ["none built, commit 1a2b3c4"],
            "Why": [
                "test step 'unit tests' failed (exit 1)",
                "FAILED (failures=1)",
            ],
            "Done": ["no release was promoted"],
            "Link": [f"{URL}/runs/5"],
        },
        id="run-failed",
    ),
    pytest.param(
        run_failed(replace(RUN, reason="interrupted", failed_step="test step 'x'", log_tail=[])),
        {"failure"},
        ["run 5 was interrupted"],
        {"Why": ["interrupted"], "Link": [f"{URL}/runs/5"]},
        id="run-interrupted",
    ),
]


@pytest.mark.parametrize(("message", "kinds", "in_title", "in_body"), CASES)
def test_message(
    message: Message | None, kinds: set[str], in_title: list[str], in_body: dict[str, list[str]]
) -> None:
    assert message is not None
    assert message.kinds == kinds
    for text in in_title:
        assert text in message.title, (text, message.title)
    found = lines(message)
    assert list(found)[:3] == ["What", "Where", "Release"], message.body
    assert list(found)[-1] == "Link", message.body
    for label, texts in in_body.items():
        for text in texts:
            assert text in found[label], (label, text, found[label])


@pytest.mark.parametrize("state", ["cancelled", "superseded", "running"])
def test_nobody_hears_of_what_a_person_stopped(state: str) -> None:
    assert deployment_ended(replace(FAILED, state=state)) is None


TARGETS = [
    {"url": "slack://a"},  # the default: failure, rollback
    {"url": "json://all", "on": ["failure", "rollback", "approval", "success"]},
    {"url": "json://fail", "on": ["failure"]},
    {"url": "json://rb", "on": ["rollback"]},
    {"url": "json://fail", "on": ["success"]},  # listed twice: still one message
]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ({"failure"}, ["slack://a", "json://all", "json://fail"]),
        ({"failure", "rollback"}, ["slack://a", "json://all", "json://fail", "json://rb"]),
        ({"rollback"}, ["slack://a", "json://all", "json://rb"]),
        ({"success"}, ["json://all", "json://fail"]),
        ({"success", "rollback"}, ["slack://a", "json://all", "json://rb", "json://fail"]),
        ({"approval"}, ["json://all"]),
    ],
)
def test_recipients_get_a_message_once_if_they_want_any_of_its_kinds(
    kinds: set[str], expected: list[str]
) -> None:
    targets = [Notify.model_validate(t) for t in TARGETS]
    assert recipients(targets, frozenset(kinds)) == expected


def test_event_names_the_kinds_in_a_fixed_order() -> None:
    assert Message(frozenset({"rollback", "failure"}), "t", "b").event == "failure,rollback"
    assert Message(frozenset({"success", "rollback"}), "t", "b").event == "rollback,success"


def test_a_stopped_guarded_rollout_says_what_a_rolled_back_deployment_says() -> None:
    from conveyor.notify.messages import FlagStopFacts, flag_stopped

    message = flag_stopped(
        FlagStopFacts(
            app="shop",
            environment="production",
            flag="new-checkout",
            percent=25,
            hosts=["web-1", "web-2"],
            release="r-12",
            sha="0123456789abcdef",
            reason="errors vs baseline: 5.0% against 0.1%",
            link="https://cd.example.com/apps/shop/environments/production/flags",
            started_by="alice",
        )
    )
    assert message.kinds == {"failure", "rollback"}
    assert message.title == "shop production: flag new-checkout failed at 25% and was turned off"
    labels = [line.split(":", 1)[0] for line in message.body.splitlines()]
    assert labels == ["What", "Where", "Release", "Why", "Done", "Link"]
    assert "Release: r-12, commit 0123456" in message.body
    assert "Done: turned new-checkout off for everyone on web-1, web-2" in message.body
