"""The strategies' plans, as tables: which steps, which hosts, which weights."""

from __future__ import annotations

import pytest

from conveyor.deploy import bluegreen, canary, rolling
from conveyor.deploy.plan import Context, PlannedStep, chunks, rollback_targets
from conveyor.protocol import ReleaseWeight

OLD, NEW = "aaaaaaa-1", "bbbbbbb-1"


def rw(**weights: int) -> list[ReleaseWeight]:
    names = {"old": OLD, "new": NEW}
    return [ReleaseWeight(release=names[k], weight=v) for k, v in weights.items()]


def ctx(hosts: int = 4, *, first: bool = False, **kw: object) -> Context:
    names = [f"web-{i}" for i in range(1, hosts + 1)]
    previous = {h: [] if first else rw(old=100) for h in names}
    return Context(release=NEW, hosts=names, previous=previous, **kw)  # type: ignore[arg-type]


def shape(steps: list[PlannedStep]) -> list[tuple[str, list[str], int | None]]:
    return [(s.kind, list(s.targets), s.weight) for s in steps]


@pytest.mark.parametrize(
    ("hosts", "batch", "expected"),
    [
        (4, 1, [["web-1"], ["web-2"], ["web-3"], ["web-4"]]),
        (4, 2, [["web-1", "web-2"], ["web-3", "web-4"]]),
        (5, 2, [["web-1", "web-2"], ["web-3", "web-4"], ["web-5"]]),
        (3, 5, [["web-1", "web-2", "web-3"]]),
    ],
)
def test_rolling_batches(hosts: int, batch: int, expected: list[list[str]]) -> None:
    steps = rolling.plan(ctx(hosts, batch_size=batch))
    assert [list(s.targets) for s in steps if s.kind == "batch"] == expected
    assert all(s.checks for s in steps if s.kind == "batch")
    assert all(t == rw(new=100) for s in steps for t in s.targets.values())
    assert steps[-1].kind == "verify"


def test_blue_green_starts_beside_then_switches_every_host_at_once() -> None:
    steps = bluegreen.plan(ctx(3))
    assert shape(steps) == [
        ("preview", ["web-1", "web-2", "web-3"], 0),
        ("switch", ["web-1", "web-2", "web-3"], 100),
        ("verify", [], None),
    ]
    assert steps[0].targets["web-1"] == rw(old=100, new=0)
    assert steps[0].preview and steps[0].checks
    assert steps[1].targets["web-2"] == rw(new=100)


@pytest.mark.parametrize(
    ("weights", "pauses"),
    [((10, 50, 100), [30.0, 30.0, 0.0]), ((100,), [0.0]), ((25, 100), [30.0, 0.0])],
)
def test_canary_sets_each_weight_and_pauses_before_100(
    weights: tuple[int, ...], pauses: list[float]
) -> None:
    steps = canary.plan(ctx(2, steps=weights, step_pause=30.0, analyse=True))
    weighted = [s for s in steps if s.kind == "weight"]
    assert [s.weight for s in weighted] == list(weights)
    assert [s.pause for s in weighted] == pauses
    assert [s.analyse for s in weighted] == [p > 0 for p in pauses]
    for s in weighted:
        expected = rw(new=100) if s.weight == 100 else rw(old=100 - (s.weight or 0), new=s.weight)
        assert s.targets["web-1"] == expected


def test_a_first_canary_has_nothing_to_compare_and_goes_straight_to_100() -> None:
    steps = canary.plan(ctx(2, first=True, steps=(10, 100), step_pause=30.0, analyse=True))
    assert shape(steps) == [("weight", ["web-1", "web-2"], 100), ("verify", [], None)]
    assert steps[0].pause == 0


def test_migrate_runs_first_on_the_first_host_beside_the_old_release() -> None:
    for plan in (rolling.plan, bluegreen.plan, canary.plan):
        steps = plan(ctx(3, migration="deployment-7"))
        assert steps[0].kind == "migrate"
        assert list(steps[0].targets) == ["web-1"]
        assert steps[0].targets["web-1"] == [
            ReleaseWeight(release=OLD, weight=100),
            ReleaseWeight(release=NEW, weight=0, migrate="deployment-7"),
        ]
        assert sum(s.kind == "migrate" for s in steps) == 1


def test_rollback_restores_exactly_what_touched_hosts_ran() -> None:
    previous = {"web-1": rw(old=100), "web-2": rw(old=70, new=30), "web-3": []}
    assert rollback_targets(previous, ["web-2", "web-3"]) == {
        "web-2": rw(old=70, new=30),
        "web-3": [],
    }


def test_chunks() -> None:
    assert chunks(["a", "b", "c"], 2) == [["a", "b"], ["c"]]


@pytest.mark.parametrize(
    ("holdback", "expected", "window"),
    [
        (5, [("monitor", 95), ("switch", 100)], rw(old=5, new=95)),
        (0, [("monitor", 100)], rw(new=100)),
        (50, [("monitor", 50), ("switch", 100)], rw(old=50, new=50)),
    ],
)
def test_the_watch_window_holds_back_a_share_on_the_previous_release_then_ends_it(
    holdback: int, expected: list[tuple[str, int]], window: list[ReleaseWeight]
) -> None:
    steps = ctx(2, monitor=900.0, holdback=holdback, analyse=True).monitor_steps()
    assert [(s.kind, s.weight) for s in steps] == expected
    assert steps[0].targets == {"web-1": window, "web-2": window}
    assert steps[0].pause == 900.0 and steps[0].analyse
    if holdback:
        assert f"{holdback}% held back" in steps[0].name
        assert steps[1].targets["web-1"] == rw(new=100) and steps[1].pause == 0


@pytest.mark.parametrize(
    ("holdback", "most", "option"),
    [(5, 20, 20), (20, 5, 20), (0, 20, 0)],  # at least the holdback; none without one
)
def test_the_window_carries_the_most_its_holdback_may_be_raised_to(
    holdback: int, most: int, option: int
) -> None:
    c = ctx(2, monitor=900.0, holdback=holdback, holdback_max=most, analyse=True)
    assert c.monitor_steps()[0].options()["holdback_max"] == option


def test_a_first_deployment_has_nothing_to_hold_back() -> None:
    steps = ctx(2, first=True, monitor=60.0, holdback=5).monitor_steps()
    assert [(s.kind, s.weight) for s in steps] == [("monitor", 100)]
    assert steps[0].targets["web-1"] == rw(new=100)


def test_no_watch_window_no_steps() -> None:
    assert ctx(2, holdback=5).monitor_steps() == []


def test_blue_green_keeps_its_old_colour_warm_for_the_holdback() -> None:
    c = ctx(2, monitor=300.0, holdback=5, analyse=True)
    steps = bluegreen.plan(c) + c.monitor_steps()
    assert [(s.kind, s.weight) for s in steps] == [
        ("preview", 0),
        ("switch", 100),
        ("verify", None),
        ("monitor", 95),
        ("switch", 100),
    ]
    assert steps[3].targets["web-2"] == rw(old=5, new=95)
    assert steps[4].targets["web-2"] == rw(new=100)


def test_a_contract_runs_first_on_the_first_host_its_desired_state_unchanged() -> None:
    c = ctx(3, contract=(OLD, "contract-9"), migration="expand-9")
    steps = c.contract_step() + rolling.plan(c)
    assert shape(steps)[:2] == [("contract", ["web-1"], None), ("migrate", ["web-1"], None)]
    assert steps[0].targets["web-1"] == [
        ReleaseWeight(release=OLD, weight=100, migrate="contract-9")
    ]
    # the expand step writes its own split: the contract is not asked of the old release again
    assert steps[1].targets["web-1"][0] == ReleaseWeight(release=OLD, weight=100)


@pytest.mark.parametrize(
    "context",
    [ctx(2), ctx(2, first=True, contract=(OLD, "contract-9")), ctx(2, contract=(NEW, "c-9"))],
)
def test_no_contract_step_without_one_due_or_its_release_on_the_first_host(
    context: Context,
) -> None:
    assert context.contract_step() == []


@pytest.mark.parametrize(
    ("context", "kinds"),
    [
        (ctx(2, migration="expand-3", verify_previous=True), ["migrate", "compat"]),
        (ctx(2, migration="expand-3"), ["migrate"]),
        # a first deployment has no previous release to prove
        (ctx(2, first=True, migration="expand-3", verify_previous=True), ["migrate"]),
        (ctx(2, verify_previous=True), []),
    ],
)
def test_the_previous_release_is_verified_right_after_the_expand(
    context: Context, kinds: list[str]
) -> None:
    steps = context.migrate_step()
    assert [s.kind for s in steps] == kinds
    if "compat" in kinds:
        assert steps[1].targets == {} and steps[1].name == f"verify {OLD} on the migrated schema"
        # the old release keeps all of the traffic while its checks run
        assert steps[0].targets["web-1"][0] == ReleaseWeight(release=OLD, weight=100)
