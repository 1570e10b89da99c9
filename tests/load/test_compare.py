"""The load test's verdict against the previous release's record: a table of cases."""

from __future__ import annotations

import random

import pytest

from conveyor.analysis.judge import Settings
from conveyor.load.compare import Measured, judge_load, settings_for
from conveyor.load.wire import Counting, LoadSample


def run(delay: float, *, seconds: int = 8, rate: int = 40, errors: float = 0.0, seed: int = 1):
    """Samples of a load test of a release answering in `delay` s (jitter of a few ms)."""
    rng = random.Random(seed)
    counting = Counting()
    samples = []
    for second in range(1, seconds + 1):
        for _ in range(rate):
            counting.add(delay + rng.expovariate(1 / 0.004), rng.random() < errors)
        samples.append(LoadSample(at=float(second), counters=counting.counters()))
    return samples


def measured(release: str, samples: list[LoadSample], rate: float = 40.0) -> Measured:
    last = samples[-1].counters
    return Measured(release, 40.0, rate if samples else 0.0, last)


BASE = run(0.32, seed=7)

CASES = [
    # (what, samples of this release, the previous record's, expected verdict)
    ("identical", run(0.32, seed=2), BASE, "pass"),
    ("identical, another seed", run(0.32, seed=3), BASE, "pass"),
    ("5% slower: within the noise the tests allow", run(0.336, seed=4), BASE, "pass"),
    ("30% slower", run(0.416, seed=5), BASE, "fail"),
    ("twice as slow", run(0.64, seed=6), BASE, "fail"),
    ("faster", run(0.2, seed=8), BASE, "pass"),
    ("10% of requests failing", run(0.32, seed=9, errors=0.1), BASE, "fail"),
    ("no previous record", run(0.32, seed=10), None, "baseline"),
    ("no previous record, slow: nothing to compare", run(1.5, seed=11), None, "baseline"),
]


@pytest.mark.parametrize(("what", "now", "before", "expected"), CASES, ids=[c[0] for c in CASES])
def test_verdicts(what: str, now, before, expected: str) -> None:
    previous = measured("a-1", before) if before is not None else None
    verdict = judge_load(now, measured("b-2", now), previous, settings_for(None))
    assert verdict.verdict == expected, verdict.lines
    if expected == "fail":
        assert verdict.reason and "regression against release a-1" in verdict.reason
    if expected == "baseline":
        assert any("recorded as the baseline" in line for line in verdict.lines)


def test_no_request_fails_saying_so() -> None:
    verdict = judge_load([], Measured("b-2", 40.0, 0.0, Counting().counters()), None, Settings())
    assert verdict.verdict == "fail"
    assert verdict.reason and "sent no request" in verdict.reason


def test_a_rate_not_kept_is_said() -> None:
    now = run(0.32, seed=2)
    verdict = judge_load(now, measured("b-2", now, rate=20.0), measured("a-1", BASE), Settings())
    assert any("did not keep up" in line for line in verdict.lines)


def test_the_regression_evidence_names_both_releases_figures() -> None:
    now = run(0.416, seed=5)
    verdict = judge_load(now, measured("b-2", now), measured("a-1", BASE), settings_for(None))
    text = "\n".join(verdict.lines)
    assert "release b-2" in text and "release a-1" in text
    assert "latency vs baseline: fail" in text


def test_settings_keep_the_environments_budget() -> None:
    settings = settings_for(Settings(false_alarms=0.001, min_requests=500, warmup=30.0))
    assert (settings.compare, settings.min_requests, settings.warmup) == (True, 0, 0.0)
    assert settings.false_alarms == 0.001


@pytest.mark.parametrize(
    ("rate", "users", "pace"),
    [(40.0, 200, 5.0), (200.0, 1000, 5.0), (0.1, 1, 10.0), (5000.0, 4000, 0.8)],
)
def test_users_and_their_pace_make_the_rate(rate: float, users: int, pace: float) -> None:
    from conveyor.load.runner import users_for

    assert users_for(rate) == (users, pytest.approx(pace))
