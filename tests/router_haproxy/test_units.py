"""The HAProxy driver's pure parts: slot planning, counter crediting, parsers (no HAProxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.agent.routing.haproxy_config import PIN_SPREAD, Paths, runtime_commands
from conveyor.agent.routing.haproxy_counting import Sinks, count_sample
from conveyor.agent.routing.haproxy_logs import bucket_index, parse_line
from conveyor.agent.routing.haproxy_runtime import parse_proc, parse_stat
from conveyor.agent.routing.haproxy_state import (
    AppState,
    RouterState,
    Slot,
    Totals,
    credit,
    new_slots,
    pins,
    plan_slots,
    previews,
    previews_meanwhile,
)
from conveyor.agent.routing.spec import LATENCY_BUCKETS, RouterError, Target


def _slots(*specs: str) -> list[Slot]:
    """'ready:rel-a:9001:90', 'drain:rel-a:9001:0', 'maint:rel-a:9001:0' or 'free'."""
    out = []
    for i, text in enumerate(specs, 1):
        if text == "free":
            out.append(Slot(name=f"s{i}"))
            continue
        state, release, port, weight = text.split(":")
        out.append(
            Slot(name=f"s{i}", state=state, release=release, port=int(port), weight=int(weight))
        )
    return out


def _show(slots: list[Slot]) -> list[str]:
    return [
        "free" if s.release is None else f"{s.state}:{s.release}:{s.port}:{s.weight}" for s in slots
    ]


def _targets(*specs: str) -> list[Target]:
    out = []
    for text in specs:
        release, port, weight = text.split(":")
        out.append(Target(release=release, port=int(port), weight=int(weight)))
    return out


PLANS = [
    # first targets take free slots in order
    (
        ["free", "free", "free"],
        ["a:9001:90", "b:9002:10"],
        {},
        ["ready:a:9001:90", "ready:b:9002:10", "free"],
    ),
    # a weight change keeps the slot
    (
        ["ready:a:9001:90", "ready:b:9002:10", "free"],
        ["a:9001:50", "b:9002:50"],
        {},
        ["ready:a:9001:50", "ready:b:9002:50", "free"],
    ),
    # absent targets drain; one at weight 0 stays ready at weight 0, for previews
    (
        ["ready:a:9001:90", "ready:b:9002:10", "free"],
        ["a:9001:0", "c:9003:100"],
        {},
        ["ready:a:9001:0", "drain:b:9002:10", "ready:c:9003:100"],
    ),
    # a new target at weight 0 (blue-green) takes a free slot, at weight 0
    (
        ["ready:a:9001:100", "free", "free"],
        ["a:9001:100", "b:9002:0"],
        {},
        ["ready:a:9001:100", "ready:b:9002:0", "free"],
    ),
    # a weight-0 target back from maintenance is ready again; a weight change keeps its slot
    (
        ["maint:a:9001:0", "ready:b:9002:100"],
        ["a:9001:0", "b:9002:100"],
        {},
        ["ready:a:9001:0", "ready:b:9002:100"],
    ),
    (
        ["ready:a:9001:0", "ready:b:9002:100"],
        ["a:9001:100", "b:9002:0"],
        {},
        ["ready:a:9001:100", "ready:b:9002:0"],
    ),
    # a weight-0 target without a slot to spare goes without (no error, no preview)
    (
        ["ready:a:9001:100", "maint:b:9002:0"],
        ["a:9001:100", "c:9003:0"],
        {"s2": 1},
        ["ready:a:9001:100", "maint:b:9002:0"],
    ),
    # a retired idle slot is reused; a busy one is not
    (
        ["maint:a:9001:0", "maint:b:9002:0", "ready:c:9003:100"],
        ["c:9003:50", "d:9004:50"],
        {"s1": 2},
        ["maint:a:9001:0", "ready:d:9004:50", "ready:c:9003:50"],
    ),
    # rollback to a release still draining brings its slot back
    (
        ["drain:a:9001:90", "ready:b:9002:100"],
        ["a:9001:100"],
        {"s1": 1},
        ["ready:a:9001:100", "drain:b:9002:100"],
    ),
    # out of slots, a warm release at weight 0 gives up its idle one; a busy one keeps it
    (
        ["maint:a:9001:0", "ready:b:9002:100"],
        ["a:9001:0", "b:9002:50", "c:9003:50"],
        {},
        ["ready:c:9003:50", "ready:b:9002:50"],
    ),
    (
        ["ready:a:9001:0", "ready:b:9002:100", "ready:d:9004:0"],
        ["a:9001:0", "b:9002:50", "c:9003:50", "d:9004:0"],
        {"s1": 1},
        ["ready:a:9001:0", "ready:b:9002:50", "ready:c:9003:50"],
    ),
    # the same port now carries another release: a new slot, the old one drains
    (
        ["ready:a:9001:100", "free"],
        ["b:9001:100"],
        {},
        ["drain:a:9001:100", "ready:b:9001:100"],
    ),
]


@pytest.mark.parametrize(("current", "targets", "busy", "expected"), PLANS)
def test_plan_slots(
    current: list[str], targets: list[str], busy: dict[str, int], expected: list[str]
) -> None:
    planned = plan_slots(
        _slots(*current), _targets(*targets), busy=busy, now=100.0, drain_timeout=30, app="shop"
    )
    assert _show(planned) == expected
    assert all(s.drain_until == 130.0 for s in planned if s.state == "drain")


def test_plan_slots_runs_out() -> None:
    with pytest.raises(RouterError, match="no free HAProxy slot"):
        plan_slots(
            _slots("drain:a:9001:0", "maint:b:9002:0"),
            _targets("c:9003:100"),
            busy={"s2": 1},
            now=0,
            drain_timeout=30,
            app="shop",
        )


def test_pins_spread_over_the_instances_of_a_release() -> None:
    app = AppState(
        app="shop",
        bind="0.0.0.0",
        port=8000,
        sticky=True,
        slots=_slots(
            "ready:a:9001:25",
            "ready:a:9002:25",
            "ready:b:9003:50",
            "drain:c:9004:0",
            "ready:d:9005:0",
        ),
    )
    entries = dict(pins(app, PIN_SPREAD))
    assert entries.pop("_sticky") == "1"
    # never the draining slot, nor one at weight 0
    assert sorted(set(entries.values())) == ["s1", "s2", "s3"]
    assert [entries[f"a/{i}"] for i in range(4)] == ["s1", "s2", "s1", "s2"]
    assert pins(app.model_copy(update={"sticky": False}), PIN_SPREAD) == []
    # previews reach every ready slot, weight 0 included, sticky or not
    for sticky in (True, False):
        found = dict(previews(app.model_copy(update={"sticky": sticky}), PIN_SPREAD))
        assert sorted(set(found.values())) == ["s1", "s2", "s3", "s5"]
        assert {found[f"d/{i}"] for i in range(PIN_SPREAD)} == {"s5"}
        assert "c/0" not in found


def test_previews_meanwhile_drop_slots_that_change_release() -> None:
    def app(*slots: str) -> AppState:
        return AppState(app="shop", bind="0.0.0.0", port=8000, slots=_slots(*slots))

    # s1 (a, weight 0) is taken by c; s2 moves from one instance of b to another
    old = app("ready:a:9001:0", "ready:b:9002:100", "ready:b:9003:0")
    new = app("ready:c:9004:100", "ready:b:9005:100", "ready:b:9003:0")
    meanwhile = previews_meanwhile(old, new, PIN_SPREAD)
    assert {slot for _, slot in meanwhile} == {"s2", "s3"}
    assert not any(key.startswith("a/") for key, _ in meanwhile)
    assert previews_meanwhile(new, new, PIN_SPREAD) == previews(new, PIN_SPREAD)


def test_credit_survives_new_workers_and_slot_reuse() -> None:
    state = RouterState(
        apps={"shop": AppState(app="shop", bind="0.0.0.0", port=8000, slots=new_slots(2))}
    )
    slots = state.apps["shop"].slots
    slots[0].release, slots[0].state = "a", "ready"
    credit(state, {10: [("shop", "s1", 5)]})
    credit(state, {10: [("shop", "s1", 8)]})
    # a reload: worker 10 finishing, worker 11 counting from zero
    credit(state, {10: [("shop", "s1", 9)], 11: [("shop", "s1", 3)]})
    credit(state, {11: [("shop", "s1", 4)]})
    assert state.totals["shop"]["a"].connect_failures == 13
    # the slot now carries release b: only what comes after counts for b
    slots[0].release = "b"
    credit(state, {11: [("shop", "s1", 6)]})
    assert state.totals["shop"]["a"].connect_failures == 13
    assert state.totals["shop"]["b"].connect_failures == 2
    assert list(state.seen) == ["11"]


def test_the_answers_of_guarded_flags_are_counted_per_answer() -> None:
    app = AppState(app="shop", bind="0.0.0.0", port=8000, slots=new_slots(1), guarded=["a", "c"])
    app.slots[0].release, app.slots[0].state = "r1", "ready"
    state = RouterState(apps={"shop": app})
    sinks: Sinks = {}
    count_sample(state, sinks, ("be_shop", "s1", 200, 0.002, "a=on; b=on; c=blue"))
    count_sample(state, sinks, ("be_shop", "s1", 503, 0.004, "a=on; b=off; c=off"))
    count_sample(state, sinks, ("be_shop", "s1", 200, 0.003, ""))  # a line without answers
    counted = state.flag_totals["shop"]
    assert {k: (t.requests, t.errors_5xx) for k, t in counted.items()} == {
        "a=on": (2, 1),
        "c=blue": (1, 0),
        "c=off": (1, 1),
    }  # b is not under a guarded rollout
    assert counted["a=on"].latency_sum == pytest.approx(0.006)
    assert state.totals["shop"]["r1"].requests == 3
    state.reset_counters(None, 0.0)  # a new HAProxy master counts from zero
    assert state.flag_totals == {}


def test_parse_proc() -> None:
    text = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>\n"
        "1162            master          5 [failed: 1]   0d01h02m07s     2.6.12\n"
        "# workers\n"
        "1271            worker          1               0d00h00m00s     2.6.12\n"
        "# old workers\n"
        "1233            worker          3               0d00h00m43s     2.6.12\n"
        "# programs\n"
    )
    proc = parse_proc(text)
    assert (proc.master_pid, proc.reloads, proc.failed) == (1162, 5, 1)
    assert (proc.workers, proc.old_workers, proc.uptime) == ([1271], [1233], 3727.0)
    with pytest.raises(RouterError):
        parse_proc("Unknown command\n")


def test_parse_stat() -> None:
    text = (
        "# pxname,svname,scur,stot,req_tot,hrsp_5xx,econ,wretr,wredis,status,weight,type\n"
        "be_shop,s1,2,11,11,1,0,0,0,UP,90,2\n"
        "be_shop,s2,0,21,,0,3,9,9,MAINT,50,2\n"
        "be_shop,BACKEND,2,32,11,1,3,9,9,UP,140,1\n"
    )
    rows = parse_stat(text)
    assert [(r.server, r.scur, r.requests, r.hrsp_5xx, r.connect_failures) for r in rows] == [
        ("s1", 2, 11, 1, 0),
        ("s2", 0, 0, 0, 21),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"cvy1 t0k be_shop s2 200 3 2871\n", ("be_shop", "s2", 200, 0.002871, "")),
        (b"cvy1 t0k be_shop s1 503 12 -\n", ("be_shop", "s1", 503, 0.012, "")),
        (b"cvy1 t0k fe_shop <NOSRV> 503 -1 -\n", None),
        (b"cvy1 forged be_shop s2 200 3 2871\n", None),
        (b"something else entirely", None),
        # the flags' answers, spaces and all, are the rest of the line
        (b"cvy1 t0k be_shop s2 200 3 2871 -\n", ("be_shop", "s2", 200, 0.002871, "")),
        (
            b"cvy1 t0k be_shop s2 500 3 2871 a=on; b=off; c=blue\n",
            ("be_shop", "s2", 500, 0.002871, "a=on; b=off; c=blue"),
        ),
    ],
)
def test_parse_line(line: bytes, expected: tuple[str, str, int, float, str] | None) -> None:
    assert parse_line(line, b"t0k") == expected


def test_totals_saved_with_the_legacy_buckets_move_onto_the_fine_ones() -> None:
    saved = Totals.model_validate({"requests": 6, "latency_counts": [1, 0, 2] + [0] * 10 + [3]})
    buckets = saved.cumulative()
    assert len(saved.latency_counts) == len(LATENCY_BUCKETS) + 1
    assert buckets[0] == 1  # <= 1 ms
    assert buckets[LATENCY_BUCKETS.index(0.00445)] == 1  # the 2 in (2.5, 5] ms sit at 5 ms
    assert buckets[LATENCY_BUCKETS.index(0.005)] == buckets[-1] == 3
    assert saved.latency_counts[-1] == 3  # above 10 s


def test_latency_buckets_are_cumulative() -> None:
    totals = Totals()
    for latency in (0.0004, 0.001, 0.003, 0.2, 30.0):
        totals.latency_counts[bucket_index(latency)] += 1
    buckets = totals.cumulative()
    assert len(buckets) == len(LATENCY_BUCKETS)
    assert buckets[0] == 2  # 0.4 ms and 1 ms (bounds included)
    assert buckets[LATENCY_BUCKETS.index(0.00281)] == 2
    assert buckets[LATENCY_BUCKETS.index(0.00315)] == 3
    assert buckets[LATENCY_BUCKETS.index(0.25)] == 4
    assert buckets[-1] == 4  # the 30 s one is only in the implied +Inf bucket


def test_runtime_commands_bring_up_before_taking_down() -> None:
    def app(*slots: str) -> AppState:
        return AppState(app="shop", bind="0.0.0.0", port=8000, slots=_slots(*slots))

    old = app("ready:a:9001:100", "maint:z:9009:0", "drain:y:9008:0")
    new = app("drain:a:9001:100", "ready:b:9002:100", "ready:y:9008:30")
    up, down = runtime_commands(old, new)
    assert up == [
        "set server be_shop/s2 addr 127.0.0.1 port 9002",
        "set server be_shop/s2 weight 100",
        "set server be_shop/s2 state ready",
        "set server be_shop/s3 weight 30",
        "set server be_shop/s3 state ready",
    ]
    assert down == ["set server be_shop/s1 state drain"]
    assert runtime_commands(new, new) == ([], [])


def test_long_workdirs_get_their_sockets_in_a_short_directory(tmp_path: Path) -> None:
    short = Paths.for_workdir(tmp_path / "h")
    assert short.rundir == short.workdir
    deep = tmp_path / ("d" * 120)
    paths = Paths.for_workdir(deep)
    assert paths.workdir == deep.resolve() and paths.config.parent == deep.resolve()
    assert len(str(paths.master_sock)) <= 100
    assert Paths.for_workdir(deep).rundir == paths.rundir  # the same after a restart


def test_long_workdirs_get_sockets_haproxy_can_bind(tmp_path: Path) -> None:
    from conveyor.agent.routing.haproxy_config import MAX_SOCKET_PATH, Paths

    short = Paths.for_workdir(tmp_path / "h")
    assert short.rundir == (tmp_path / "h").resolve() or len(str(tmp_path)) > 70
    deep = Paths.for_workdir(tmp_path / ("x" * 80) / "haproxy")
    assert len(str(deep.master_sock)) <= MAX_SOCKET_PATH < 97
    assert Paths.for_workdir(tmp_path / ("x" * 80) / "haproxy").rundir == deep.rundir
