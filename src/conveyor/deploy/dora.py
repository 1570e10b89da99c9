"""The four delivery (DORA) metrics of one app, per environment, from its deployment history.

A pure function of plain records and a window; the API, `conveyor status --dora` and the
server's /metrics all call it, so they agree; `dora_over_time` calls it once a period, for
the dashboard's charts. The definitions below are the contract.

**Window.** W = [since, until). A deployment *ends in W* when its `finished_at` lies in W.
The records are those of one app; every figure is per environment, and a deployment only
ever affects its own environment. Records outside W still matter as context (what served
before, what restored a failure). Nothing later than `until` is looked at, so a figure
for a past window does not change as history grows.

**Deployment frequency.** `deployments` = the `deploy`-kind deployments with state
`succeeded` that end in W (rollbacks are not deployments of a change; a success later
undone still counts). `deployment_frequency` = deployments / (length of W in days);
None only for an empty window.

**Lead time for changes.** Over those same deployments: `finished_at` minus the committer
time of the release's commit (`committed_at`), or, when the commit time is unknown,
minus the creation of the run that built the release (`run_created_at`; counted in
`lead_time_from_run`, and said so wherever the figure is shown). A deployment with
neither is left out. A commit clock ahead of the server's gives a negative span, counted
as 0. `lead_time` is the median (the mean of the two middle values for an even count),
`lead_time_p90` the 90th percentile by nearest rank (the ⌈0.9·n⌉-th smallest). None
without any value.

**Change failure rate.** `changes` = the `deploy`-kind deployments that end in W with
state `succeeded` or `failed` (cancelled ones were stopped by a person or by a rollback,
superseded ones never started: neither is a change that was put to the test).
`failed_changes` = those with state `failed` (whether or not their automatic rollback
worked), plus those that succeeded and were later *undone*. A `rollback`-kind deployment
R that started before `until` (and was neither cancelled nor superseded) undoes the last
deployment of the environment that succeeded before R started, when that one is of kind
`deploy` (rolling back a rollback undoes no change; a second rollback after a failed one
undoes nothing more: the change was undone once, by the first). `change_failure_rate` =
failed_changes / changes; None when there was no change.

**Time to restore.** A *failure* is either
  (a) a `deploy`-kind deployment that ended, before `until`, with state `failed`: it
      failed at `failed_at` (the end of its failing step; its `finished_at` when
      unknown), and service was restored at its own `finished_at` when its automatic
      rollback step succeeded, or when it had no rollback step (it had touched no host:
      the previous release never stopped serving); otherwise at the end of the next
      succeeded deployment, of any kind, in the environment; or
  (b) a change undone by a rollback R (as above): it failed when R started, and was
      restored when R finished if R succeeded, otherwise at the end of the next succeeded
      deployment, of any kind, in the environment.
`failures` counts the failures whose failure moment lies in W; `restored` those of them
restored before `until`. `time_to_restore` = the median of (restored - failed) over the
restored ones; None when none was.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

__all__ = [
    "DAY",
    "DeploymentRecord",
    "EnvironmentDora",
    "PeriodDora",
    "dora",
    "dora_over_time",
    "environment_dora",
    "median",
    "percentile",
]

DAY = 86400.0


@dataclass(frozen=True)
class DeploymentRecord:
    """One deployment as the delivery metrics see it: plain data read from the store."""

    id: int
    environment: str
    kind: str  # deploy | rollback
    state: str  # queued … succeeded | failed | cancelled | superseded
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # when its failing step ended (a failed deployment); None: unknown, use finished_at
    failed_at: datetime | None = None
    # the state of its automatic rollback step, if it had one
    rollback: str | None = None
    # the committer time of the release's commit, and the creation of the run that built it
    committed_at: datetime | None = None
    run_created_at: datetime | None = None


@dataclass(frozen=True)
class EnvironmentDora:
    """The four figures of one environment over one window (durations in seconds)."""

    environment: str
    deployments: int
    deployment_frequency: float | None  # per day
    lead_time: float | None  # median
    lead_time_p90: float | None
    lead_time_from_run: int  # lead times that started at the run's creation, not the commit
    changes: int
    failed_changes: int
    change_failure_rate: float | None
    failures: int
    restored: int
    time_to_restore: float | None  # median


@dataclass(frozen=True)
class PeriodDora:
    """The figures of every environment over one period of a series (for charts over time)."""

    since: datetime
    until: datetime
    environments: list[EnvironmentDora]


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank: the ⌈p·n⌉-th smallest value (p in (0, 1])."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p * len(ordered)))
    return float(ordered[rank - 1])


def dora(
    records: Iterable[DeploymentRecord],
    since: datetime,
    until: datetime,
    environments: Sequence[str] = (),
) -> list[EnvironmentDora]:
    """The figures per environment: those named first (in order), then any other seen."""
    by_env: dict[str, list[DeploymentRecord]] = {name: [] for name in environments}
    for r in records:
        by_env.setdefault(r.environment, []).append(r)
    return [environment_dora(name, rows, since, until) for name, rows in by_env.items()]


def environment_dora(
    name: str, records: Sequence[DeploymentRecord], since: datetime, until: datetime
) -> EnvironmentDora:
    """The figures of one environment; `records` are that environment's deployments."""

    def ends_in_window(r: DeploymentRecord) -> bool:
        return r.finished_at is not None and since <= r.finished_at < until

    # what happened before `until`, in the order it ended
    ended = sorted(
        (r for r in records if r.finished_at is not None and r.finished_at < until),
        key=lambda r: (r.finished_at, r.id),
    )
    succeeded = [r for r in ended if r.state == "succeeded"]

    deployed = [r for r in succeeded if r.kind == "deploy" and ends_in_window(r)]
    days = (until - since).total_seconds() / DAY
    frequency = len(deployed) / days if days > 0 else None
    leads, from_run = _lead_times(deployed)

    # changes undone by a rollback deployment, and the failures of kind (b), then (a)
    undone, failures = _rolled_back(records, succeeded, until)
    failures += _failed_deploys(ended, succeeded)

    changes = _changes(ended, ends_in_window)
    failed_changes = sum(1 for r in changes if r.state == "failed" or r.id in undone)
    in_window = [(f, rs) for f, rs in failures if since <= f < until]
    restores = [(rs - f).total_seconds() for f, rs in in_window if rs is not None]
    return EnvironmentDora(
        environment=name,
        deployments=len(deployed),
        deployment_frequency=frequency,
        lead_time=median(leads),
        lead_time_p90=percentile(leads, 0.9),
        lead_time_from_run=from_run,
        changes=len(changes),
        failed_changes=failed_changes,
        change_failure_rate=failed_changes / len(changes) if changes else None,
        failures=len(in_window),
        restored=len(restores),
        time_to_restore=median(restores),
    )


def _changes(
    ended: list[DeploymentRecord], in_window: Callable[[DeploymentRecord], bool]
) -> list[DeploymentRecord]:
    """The deployments of a change that ended (succeeded or failed) in the window."""
    return [
        r
        for r in ended
        if r.kind == "deploy" and r.state in ("succeeded", "failed") and in_window(r)
    ]


def _lead_times(deployed: list[DeploymentRecord]) -> tuple[list[float], int]:
    """Each deployment's lead time (seconds), and how many count from the run (no commit time)."""
    leads: list[float] = []
    from_run = 0
    for r in deployed:
        assert r.finished_at is not None
        start = r.committed_at or r.run_created_at
        if start is None:
            continue
        from_run += r.committed_at is None
        leads.append(max(0.0, (r.finished_at - start).total_seconds()))
    return leads, from_run


def _next_success(succeeded: list[DeploymentRecord], after: datetime) -> datetime | None:
    for r in succeeded:
        assert r.finished_at is not None
        if r.finished_at > after:
            return r.finished_at
    return None


Failure = tuple[datetime, datetime | None]  # (failed, restored)


def _rolled_back(
    records: Sequence[DeploymentRecord], succeeded: list[DeploymentRecord], until: datetime
) -> tuple[set[int], list[Failure]]:
    """The changes a rollback deployment undid, and those failures (kind (b))."""
    undone: set[int] = set()
    failures: list[Failure] = []
    rollbacks = sorted(
        (
            r
            for r in records
            if r.kind == "rollback"
            and r.started_at is not None
            and r.started_at < until
            and r.state not in ("cancelled", "superseded")
        ),
        key=lambda r: (r.started_at, r.id),
    )
    for rb in rollbacks:
        assert rb.started_at is not None
        start = rb.started_at
        before = [r for r in succeeded if r.finished_at is not None and r.finished_at <= start]
        if not before or before[-1].kind != "deploy" or before[-1].id in undone:
            continue  # a rollback of a rollback, or a second go at the same change
        undone.add(before[-1].id)
        if rb.state == "succeeded" and rb.finished_at is not None and rb.finished_at < until:
            restored: datetime | None = rb.finished_at
        else:
            restored = _next_success(succeeded, rb.started_at)
        failures.append((rb.started_at, restored))
    return undone, failures


def _failed_deploys(
    ended: list[DeploymentRecord], succeeded: list[DeploymentRecord]
) -> list[Failure]:
    """Deployments that failed (kind (a)): when, and when the service was restored."""
    failures: list[Failure] = []
    for r in ended:
        if r.kind != "deploy" or r.state != "failed":
            continue
        assert r.finished_at is not None
        failed = r.failed_at or r.finished_at
        # no rollback step: it touched no host, the previous release kept serving
        back = r.rollback in (None, "succeeded")
        restored = r.finished_at if back else _next_success(succeeded, failed)
        failures.append((failed, restored))
    return failures


def dora_over_time(
    records: Iterable[DeploymentRecord],
    *,
    until: datetime,
    periods: int,
    period_days: float,
    environments: Sequence[str] = (),
) -> list[PeriodDora]:
    """The figures of consecutive periods of `period_days` ending at `until`, oldest first.

    Each period is a window of `dora` (so the definitions are the same ones), given every
    record: the records before a period are its context, and those after it `dora` ignores.
    Every period lists the same environments in the same order (those named, then any other
    seen in the records), so a chart has a value, or None, for each one.
    """
    if periods < 0 or period_days <= 0:
        raise ValueError(
            f"dora_over_time needs periods >= 0 and period_days > 0, got {periods} and "
            f"{period_days}"
        )
    rows = list(records)
    span = timedelta(days=period_days)
    # boundaries from `until` by multiplication, not by adding spans up, so no rounding
    # error accumulates and the last period ends exactly at `until`
    bounds = [until - span * (periods - i) for i in range(periods + 1)]
    return [
        PeriodDora(since, end, dora(rows, since, end, environments))
        for since, end in pairwise(bounds)
    ]
