"""Whether a new deployment may join an environment: a table of cases."""

from __future__ import annotations

from datetime import datetime

import pytest

from conveyor.deploy.admission import Admit, Ask, Held, Refuse, admit

OLD, NEW = datetime(2026, 12, 1), datetime(2026, 12, 2)


def held(id: int, state: str, release: str = "r1", kind: str = "deploy", **kw: object) -> Held:
    built = NEW if release == "r2" else OLD
    return Held(id=id, kind=kind, state=state, release=release, built=built, **kw)  # type: ignore[arg-type]


def ask(release: str = "r1", kind: str = "deploy", forced: bool = False) -> Ask:
    return Ask(kind=kind, release=release, built=NEW if release == "r2" else OLD, forced=forced)


CASES: list[tuple[str, Ask, list[Held], Admit | str]] = [
    ("nothing there", ask(), [], Admit()),
    ("another release running: queue behind it", ask("r2"), [held(1, "running")], Admit()),
    ("the same release running", ask(), [held(1, "running")], "already being deployed to"),
    ("the same release rolling back: may queue", ask(), [held(1, "rolling_back")], Admit()),
    ("the same release queued", ask(), [held(1, "queued")], "is already queued for"),
    (
        "the same release waiting: says for what",
        ask(),
        [held(1, "waiting", reason="waiting for approval: conveyor approve 3")],
        "deployment #1 (waiting for approval: conveyor approve 3)",
    ),
    ("forced past a waiting one", ask(forced=True), [held(1, "waiting")], Admit(supersede=[1])),
    (
        "forced, the queued one forced too",
        ask(forced=True),
        [held(1, "waiting", forced=True)],
        "is already queued",
    ),
    ("a newer release supersedes", ask("r2"), [held(1, "queued")], Admit(supersede=[1])),
    (
        "an older release does not",
        ask("r1"),
        [held(1, "queued", release="r2")],
        "a newer release, r2, is already queued",
    ),
    (
        "a queued rollback goes first",
        ask("r2"),
        [held(1, "running"), held(2, "queued", kind="rollback")],
        "a rollback of production of shop to r1 is queued and goes first",
    ),
    (
        "rollback: cancels what waits, aborts what runs",
        ask(kind="rollback"),
        [held(1, "running", release="r2"), held(2, "waiting", release="r2")],
        Admit(cancel=[2], abort=[1]),
    ),
    (
        "rollback: an aborting one is already stopping",
        ask(kind="rollback"),
        [held(1, "aborting", release="r2")],
        Admit(),
    ),
    (
        "rollback to the same release queued",
        ask(kind="rollback"),
        [held(1, "aborting", release="r2"), held(2, "queued", kind="rollback")],
        "a rollback of production of shop to r1 is already queued: deployment #2",
    ),
    (
        "rollback to the same release running",
        ask(kind="rollback"),
        [held(2, "running", kind="rollback")],
        "already rolling back to r1: deployment #2",
    ),
]


@pytest.mark.parametrize(("name", "new", "there", "expected"), CASES, ids=[c[0] for c in CASES])
def test_admission(name: str, new: Ask, there: list[Held], expected: Admit | str) -> None:
    decision = admit(new, there, "shop", "production")
    if isinstance(expected, Admit):
        assert decision == expected
    else:
        assert isinstance(decision, Refuse), decision
        assert decision.reason.startswith("refused: ")
        assert expected in decision.reason, decision.reason


def test_a_refusal_names_the_deployment_in_the_way_and_the_chain_records_it() -> None:
    decision = admit(ask("r1"), [held(7, "queued", release="r2")], "shop", "production")
    assert isinstance(decision, Refuse)
    assert decision.holder == 7 and decision.state == "superseded"
    assert "conveyor abort --deployment 7" in decision.reason
    behind_rollback = admit(ask("r2"), [held(8, "queued", kind="rollback")], "shop", "production")
    assert isinstance(behind_rollback, Refuse) and behind_rollback.state == "cancelled"
