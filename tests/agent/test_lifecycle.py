"""A release's lifecycle on a host, as tables: retiring, wanted again, routed."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, get_args

import pytest

from conveyor.agent.lifecycle import Move, Phase, Retire, Retiring, Wanted, retire, want
from conveyor.agent.routing.spec import Target
from conveyor.agent.traffic import Hold, Release, Route, plan_route
from conveyor.protocol import DesiredApp, DesiredRelease, ReleasePhase, ServiceSpec

P = Phase
NOW = 1000.0


def test_the_phases_are_the_strings_the_agent_reports() -> None:
    assert {p.value for p in Phase} == set(get_args(ReleasePhase))
    assert json.dumps([Phase.WARM]) == '["warm"]' and f"{Phase.DRAINING}" == "draining"


# -- retiring: a release no longer desired nor serving -----------------------------

# a healthy release with an instance that still runs, drains 30 s, would stay warm 600 s
BASE = Retiring(
    phase=P.HEALTHY,
    verified=True,
    has_instance=True,
    alive=True,
    in_flight=0,
    drain=30.0,
    drain_started=None,
    kept_warm=True,
    keep_warm=600.0,
    warm_until=None,
)


@pytest.mark.parametrize(
    ("changes", "move"),
    [
        # healthy with an instance: it starts draining now
        ({}, Move(P.DRAINING, Retire.DRAIN, at=NOW)),
        ({"in_flight": 3}, Move(P.DRAINING, Retire.DRAIN, at=NOW)),
        # healthy but its instance is gone: nothing to drain
        ({"has_instance": False, "alive": False}, Move(P.HEALTHY, Retire.STOP)),
        # draining: requests still in flight and time left → it waits
        (
            {"phase": P.DRAINING, "drain_started": NOW - 10, "in_flight": 2},
            Move(P.DRAINING, Retire.WAIT),
        ),
        # ... no request in flight any more → warm for keep_warm
        (
            {"phase": P.DRAINING, "drain_started": NOW - 10},
            Move(P.WARM, Retire.KEEP_WARM, at=NOW + 600.0),
        ),
        # ... its drain time is up, requests or not → warm
        (
            {"phase": P.DRAINING, "drain_started": NOW - 30, "in_flight": 2},
            Move(P.WARM, Retire.KEEP_WARM, at=NOW + 600.0),
        ),
        # ... not among the last keep_warm_releases: warm for no time (it stops next)
        (
            {"phase": P.DRAINING, "drain_started": NOW - 10, "kept_warm": False},
            Move(P.WARM, Retire.KEEP_WARM, at=NOW),
        ),
        # ... draining without an instance still drains until its time is up
        (
            {"phase": P.DRAINING, "drain_started": NOW - 1, "in_flight": 1, "has_instance": False},
            Move(P.DRAINING, Retire.WAIT),
        ),
        # warm: stays warm while kept, alive and its time is not up
        ({"phase": P.WARM, "warm_until": NOW + 1}, Move(P.WARM, Retire.WAIT)),
        ({"phase": P.WARM, "warm_until": NOW}, Move(P.WARM, Retire.STOP)),
        ({"phase": P.WARM, "warm_until": None}, Move(P.WARM, Retire.STOP)),
        ({"phase": P.WARM, "warm_until": NOW + 1, "kept_warm": False}, Move(P.WARM, Retire.STOP)),
        ({"phase": P.WARM, "warm_until": NOW + 1, "alive": False}, Move(P.WARM, Retire.STOP)),
        # never healthy: nothing worth keeping warm
        ({"phase": P.INSTALLING, "verified": False}, Move(P.STOPPED, Retire.STOP)),
        ({"phase": P.STARTING, "verified": False}, Move(P.STOPPED, Retire.STOP)),
        # healthy once, starting again (a migration due): stops too, without draining
        ({"phase": P.STARTING}, Move(P.STARTING, Retire.STOP)),
        ({"phase": P.FAILED}, Move(P.FAILED, Retire.STOP)),
        ({"phase": P.FAILED, "has_instance": False}, Move(P.FAILED, Retire.STOP)),
        ({"phase": P.STOPPED}, Move(P.STOPPED, Retire.STOP)),
    ],
)
def test_a_retired_release_moves_toward_stopped(changes: dict[str, Any], move: Move) -> None:
    assert retire(replace(BASE, **changes), NOW) == move


def _retire_within_one_tick(r: Retiring) -> list[Phase]:
    """The phases a release goes through in one tick, as the reconciler applies them."""
    seen = [r.phase]
    while (move := retire(r, NOW)).action in (Retire.DRAIN, Retire.KEEP_WARM):
        at = move.at
        r = replace(r, phase=move.phase)
        r = (
            replace(r, drain_started=at)
            if move.action is Retire.DRAIN
            else replace(r, warm_until=at)
        )
        seen.append(move.phase)
    return [*seen, P.STOPPED if move.action is Retire.STOP else move.phase]


@pytest.mark.parametrize(
    ("changes", "phases"),
    [
        # idle and kept warm: drained at once, then warm
        ({}, [P.HEALTHY, P.DRAINING, P.WARM, P.WARM]),
        # idle and not kept warm: drained and stopped in the same tick
        ({"kept_warm": False}, [P.HEALTHY, P.DRAINING, P.WARM, P.STOPPED]),
        # requests in flight: it drains
        ({"in_flight": 1}, [P.HEALTHY, P.DRAINING, P.DRAINING]),
        # no drain time at all: warm at once even with requests in flight
        ({"in_flight": 1, "drain": 0.0}, [P.HEALTHY, P.DRAINING, P.WARM, P.WARM]),
    ],
)
def test_one_tick_of_retiring(changes: dict[str, Any], phases: list[Phase]) -> None:
    assert _retire_within_one_tick(replace(BASE, **changes)) == phases


# -- wanted: a desired release ---------------------------------------------------------

UP = Wanted(
    phase=P.HEALTHY,
    verified=True,
    has_instance=True,
    alive=True,
    migration_due=False,
    failed_now=False,
)


@pytest.mark.parametrize(
    ("changes", "phase"),
    [
        ({}, P.HEALTHY),
        ({"migration_due": True}, P.STARTING),  # healthy again once its migration ran
        # its instance is gone (not merely restarting): installed and started again
        ({"has_instance": False, "alive": False}, P.INSTALLING),
        ({"alive": False}, P.HEALTHY),  # the supervisor restarts it
        ({"phase": P.INSTALLING}, P.INSTALLING),
        ({"phase": P.STARTING}, P.STARTING),
        # failed for this generation: no retry in a loop
        ({"phase": P.FAILED, "failed_now": True}, P.FAILED),
        # a new desired generation retries
        ({"phase": P.FAILED}, P.INSTALLING),
        # back from draining or warm: a verified live instance takes traffic again at once
        ({"phase": P.DRAINING}, P.HEALTHY),
        ({"phase": P.WARM}, P.HEALTHY),
        ({"phase": P.WARM, "migration_due": True}, P.STARTING),
        # ... one never verified is checked first; a dead one is brought up anew
        ({"phase": P.WARM, "verified": False}, P.STARTING),
        ({"phase": P.DRAINING, "alive": False}, P.INSTALLING),
        ({"phase": P.WARM, "alive": False, "has_instance": False}, P.INSTALLING),
    ],
)
def test_a_desired_release(changes: dict[str, Any], phase: Phase) -> None:
    assert want(replace(UP, **changes)) is phase


# -- routing: the desired weights, once every weighted release is healthy --------------


def _release(
    name: str, weight: int, *, port: int = 9000, keep_warm: float = 600.0
) -> DesiredRelease:
    service = ServiceSpec(start="run", port=port, drain=5.0, keep_warm=keep_warm)
    return DesiredRelease(release=name, sha256="0", artifact="a", weight=weight, service=service)


APP = DesiredApp(app="web", releases=[_release("v1", 90), _release("v2", 10, port=9100)])
UP1 = Release(P.HEALTHY, 7001)
UP2 = Release(P.HEALTHY, 7002)


@pytest.mark.parametrize(
    ("releases", "hold"),
    [
        ({}, Hold(None)),
        ({"v1": UP1}, Hold(None)),  # v2 is not there yet
        ({"v1": UP1, "v2": Release(P.STARTING, 7002)}, Hold(None)),
        ({"v1": UP1, "v2": Release(P.HEALTHY, None)}, Hold(None)),  # no instance
        (
            {"v1": UP1, "v2": Release(P.FAILED, None, "boom")},
            Hold("v2: boom; the previous routing is kept"),
        ),
        (
            {"v1": Release(P.FAILED, None, "a"), "v2": Release(P.FAILED, None, "b")},
            Hold("v1: a; v2: b; the previous routing is kept"),
        ),
    ],
)
def test_the_previous_routing_is_kept_until_every_weighted_release_is_healthy(
    releases: dict[str, Release], hold: Hold
) -> None:
    assert plan_route(APP, releases, "127.0.0.1") == hold


def test_an_app_with_no_weighted_release_keeps_its_routing() -> None:
    app = DesiredApp(app="web", releases=[_release("v1", 0)])
    assert plan_route(app, {"v1": UP1}, "127.0.0.1") == Hold(None)


def test_the_routing_gives_the_desired_weights() -> None:
    plan = plan_route(APP, {"v1": UP1, "v2": UP2}, "127.0.0.1")
    assert isinstance(plan, Route)
    assert plan.top.release == "v1"
    assert plan.spec.targets == [
        Target(release="v1", port=7001, weight=90),
        Target(release="v2", port=7002, weight=10),
    ]
    # the app's port and drain come from its first weighted release
    assert (plan.spec.app, plan.spec.port, plan.spec.bind, plan.spec.drain_timeout) == (
        "web",
        9000,
        "127.0.0.1",
        5.0,
    )


def test_a_healthy_release_at_weight_0_is_a_target_a_missing_one_is_not() -> None:
    app = DesiredApp(
        app="web", releases=[_release("v1", 0), _release("v2", 100), _release("v3", 0)], sticky=True
    )
    plan = plan_route(app, {"v1": UP1, "v2": UP2}, "0.0.0.0")
    assert isinstance(plan, Route)
    assert plan.top.release == "v2" and plan.spec.sticky and plan.spec.port == 9000
    assert [(t.release, t.weight) for t in plan.spec.targets] == [("v1", 0), ("v2", 100)]


def test_an_app_with_domains_is_routed_on_the_shared_port() -> None:
    service = ServiceSpec(
        start="run", port=9000, domains=["shop.example.com"], path_prefix="/api", strip_prefix=True
    )
    release = DesiredRelease(release="v1", sha256="0", artifact="a", weight=100, service=service)
    app = DesiredApp(app="web", releases=[release])
    plan = plan_route(app, {"v1": UP1}, "127.0.0.1", http_port=8080)
    assert isinstance(plan, Route)
    spec = plan.spec
    assert (spec.port, spec.domains, spec.path_prefix, spec.strip_prefix) == (
        8080,
        ["shop.example.com"],
        "/api",
        True,
    )
    # without domains: the app's own port, whatever the shared one
    plan = plan_route(APP, {"v1": UP1, "v2": UP2}, "127.0.0.1", http_port=8080)
    assert isinstance(plan, Route) and plan.spec.port == 9000 and plan.spec.domains == []
