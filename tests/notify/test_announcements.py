"""What `announce:` says before and after a deployment (pure messages, table tests)."""

from __future__ import annotations

import math

import pytest

from conveyor.config import Notify
from conveyor.notify.announcements import (
    Commit,
    Measured,
    OutcomeFacts,
    Plan,
    StartFacts,
    after,
    announce_recipients,
    before,
    commits_text,
    duration,
    expected_time,
    latency,
    rollback_text,
    strategy_text,
)
from conveyor.notify.delivery import notify_type


def start(**kw: object) -> StartFacts:
    base: dict[str, object] = {
        "id": 12,
        "app": "shop",
        "environment": "production",
        "release": "bbbbbbb-1",
        "sha": "b" * 40,
        "link": "http://ci/deployments/12",
        "hosts": ["web-1", "web-2"],
        "plan": Plan("canary", (10, 50, 100), 120.0, 1, 900.0),
        "previous_release": "aaaaaaa-1",
        "commits": [Commit("c" * 40, "add search", "Ada"), Commit("d" * 40, "fix typo", "Bob")],
        "history": (),
        "keep_warm": 600.0,
    }
    return StartFacts(**(base | kw))  # type: ignore[arg-type]


def labelled(body: str) -> dict[str, str]:
    found: dict[str, str] = {}
    label = ""
    for line in body.splitlines():
        head, sep, rest = line.partition(": ")
        if sep and not line.startswith(" "):
            label = head
            found[label] = rest
        else:
            found[label] += "\n" + line
    return found


def test_before_says_what_commits_where_strategy_time_link_and_rollback() -> None:
    message = before(start())
    lines = labelled(message.body)
    assert list(lines) == [
        "What", "Commits", "Where", "Strategy", "Expected", "Link", "Rollback"
    ]  # fmt: skip
    assert message.kinds == frozenset({"announce"}) and message.event == "announce"
    assert message.title == "shop production: deploying bbbbbbb-1 now"
    assert "release bbbbbbb-1 (commit bbbbbbb)" in lines["What"]
    assert lines["Commits"] == (
        "2 since aaaaaaa-1:\n  ccccccc add search (Ada)\n  ddddddd fix typo (Bob)"
    )
    assert lines["Where"] == "app shop, environment production, hosts web-1, web-2"
    assert lines["Strategy"] == (
        "canary: 10% → 50% → 100% of the traffic, 2m a step; then watched for 15m (a breach "
        "rolls back)"
    )
    assert lines["Expected"].startswith("at least 19m (2 canary step(s) of 2m, then 15m of")
    assert lines["Link"] == "http://ci/deployments/12"
    assert lines["Rollback"] == (
        "`conveyor rollback shop production` puts aaaaaaa-1 back (a router switch while it "
        "is kept warm, 10m)"
    )


@pytest.mark.parametrize(
    ("commits", "previous", "says"),
    [
        (None, "a-1", "not known (the range since a-1 is not in the repository)"),
        ([], "a-1", "none since a-1 (the same code, deployed again)"),
        ([], None, "the first release of this environment"),
        ([Commit("e" * 40, "s", "A")] * 25, "a-1", "25 since a-1:"),
    ],
)
def test_commits(commits: list[Commit] | None, previous: str | None, says: str) -> None:
    text = commits_text(commits, previous)
    assert text.startswith(says)
    if commits and len(commits) > 20:
        assert text.count("\n  eeeeeee") == 20 and text.endswith("… and 5 more")


@pytest.mark.parametrize(
    ("plan", "hosts", "text"),
    [
        (Plan("rolling", batch=1), 3, "rolling: 1 of 3 host(s) at a time"),
        (Plan("rolling", batch=5), 3, "rolling: 3 of 3 host(s) at a time"),
        (
            Plan("blue-green"),
            2,
            "blue-green: the new release starts beside the old, then all traffic switches",
        ),
        (Plan("canary", (25, 100), 30.0), 1, "canary: 25% → 100% of the traffic, 30s a step"),
        (
            Plan("rolling", monitor=60.0),
            1,
            "rolling: 1 of 1 host(s) at a time; then watched for 1m (a breach rolls back)",
        ),
    ],
)
def test_strategy(plan: Plan, hosts: int, text: str) -> None:
    assert strategy_text(plan, hosts) == text


@pytest.mark.parametrize(
    ("history", "plan", "starts"),
    [
        (
            [200.0, 100.0, 300.0],
            Plan("rolling"),
            "about 3m20s (the last 3 deployment(s) here took 1m40s to 5m)",
        ),
        ([65.0], Plan("rolling"), "about 1m05s (the last 1 deployment(s) here took 1m05s)"),
        ([], Plan("canary", (10, 100), 60.0), "at least 1m (1 canary step(s) of 1m)"),
        ([], Plan("rolling", monitor=300.0), "at least 5m (5m of monitoring)"),
        ([], Plan("rolling"), "the time the hosts take to start the release (no earlier"),
    ],
)
def test_expected_time(history: list[float], plan: Plan, starts: str) -> None:
    assert expected_time(history, plan).startswith(starts)


def test_a_first_release_has_nothing_to_roll_back_to() -> None:
    assert rollback_text("shop", "production", None, 0.0, 12) == (
        "`conveyor abort --deployment 12` stops it; there is no earlier release here to roll "
        "back to"
    )


def outcome(**kw: object) -> OutcomeFacts:
    base: dict[str, object] = {
        "id": 12,
        "app": "shop",
        "environment": "production",
        "release": "bbbbbbb-1",
        "sha": "b" * 40,
        "link": "http://ci/deployments/12",
        "hosts": ["web-1"],
        "previous_release": "aaaaaaa-1",
        "source": "router",
        "before": Measured(12034, 0.001, 0.08),
        "after": Measured(3400, 0.0012, 0.095),
        "took": 250.0,
    }
    return OutcomeFacts(**(base | kw))  # type: ignore[arg-type]


def test_after_gives_error_rate_and_p95_before_and_after() -> None:
    message = after(outcome())
    lines = labelled(message.body)
    assert list(lines) == ["What", "Error rate", "p95", "Measured", "Link", "Rollback"]
    assert "serves production, took 4m10s" in lines["What"]
    assert lines["Error rate"] == (
        "0.10% (aaaaaaa-1, 12,034 requests) before → 0.12% (bbbbbbb-1, 3,400 requests) after"
    )
    assert lines["p95"] == (
        "80 ms (aaaaaaa-1, 12,034 requests) before → 95 ms (bbbbbbb-1, 3,400 requests) after"
    )
    assert lines["Measured"].startswith("by the router source on web-1")


@pytest.mark.parametrize(
    ("kw", "rate"),
    [
        ({"before": None}, "no requests counted (aaaaaaa-1) before → 0.12%"),
        ({"after": Measured(0, None, None)}, "→ no requests counted (bbbbbbb-1) after"),
        ({"error": "prometheus unreachable"}, "not measured: prometheus unreachable"),
    ],
)
def test_after_says_what_it_could_not_measure(kw: dict[str, object], rate: str) -> None:
    assert rate in labelled(after(outcome(**kw)).body)["Error rate"]


@pytest.mark.parametrize(
    ("value", "text"), [(None, "n/a"), (0.0123, "12 ms"), (2.5, "2.50 s"), (math.inf, "beyond")]
)
def test_latency(value: float | None, text: str) -> None:
    assert latency(value).startswith(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (60, "1m"), (61, "1m01s"), (3700, "1h01m")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_announcements_go_to_targets_that_ask_else_to_every_target() -> None:
    a = Notify(url="json://a/", on=["failure"])
    b = Notify(url="json://b/", on=["announce", "failure"])
    assert announce_recipients([a]) == ["json://a/"]
    assert announce_recipients([a, b]) == ["json://b/"]
    assert notify_type("announce") == "info"
