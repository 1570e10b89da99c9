"""A recorded deployment history of one app, and its delivery figures computed by hand.

Times are offsets from a day zero T0 (`at(day, hh, mm)`), so the same history serves the
pure unit tests (any T0) and the server test (T0 a couple of weeks ago, written to its
database). Every expected figure below is worked out in the comments, not by the code
under test.

Commits (release: committer time; the run that built it was created 5 min later):
  r0 d-1 00:00   r1 d0 00:00   r2 d1 00:00   r3 d2 00:00   r4 d3 00:00
  r5 unknown (its run was created d4 00:10)   r6 d5 00:00   r7 d6 00:00   r8 d10 00:30
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.deploy.dora import DeploymentRecord


def at(day: int, hour: int = 0, minute: int = 0) -> timedelta:
    return timedelta(days=day, hours=hour, minutes=minute)


@dataclass(frozen=True)
class Commit:
    release: str
    sha: str
    committed: timedelta | None
    run_created: timedelta


COMMITS = [
    Commit("r0", "a0" * 20, at(-1), at(-1, 0, 5)),
    Commit("r1", "a1" * 20, at(0), at(0, 0, 5)),
    Commit("r2", "a2" * 20, at(1), at(1, 0, 5)),
    Commit("r3", "a3" * 20, at(2), at(2, 0, 5)),
    Commit("r4", "a4" * 20, at(3), at(3, 0, 5)),
    Commit("r5", "a5" * 20, None, at(4, 0, 10)),  # commit time unknown: lead time from the run
    Commit("r6", "a6" * 20, at(5), at(5, 0, 5)),
    Commit("r7", "a7" * 20, at(6), at(6, 0, 5)),
    Commit("r8", "a8" * 20, at(10, 0, 30), at(10, 0, 35)),
]


@dataclass(frozen=True)
class Recorded:
    """One deployment as the store holds it: the failing step and the rollback step too."""

    id: int
    environment: str
    kind: str
    state: str
    release: str
    created: timedelta
    started: timedelta | None
    finished: timedelta
    failed: timedelta | None = None  # the failing step's end
    rollback: str | None = None  # the automatic rollback step's state
    reason: str | None = None


S, P = "staging", "production"
HISTORY = [
    # -- staging -------------------------------------------------------------------------
    # lead 00:20 - 00:00 = 1200 s
    Recorded(1, S, "deploy", "succeeded", "r1", at(0, 0, 6), at(0, 0, 10), at(0, 0, 20)),
    # lead 1 h 00:30 - 1 h 00:00 = 1800 s
    Recorded(2, S, "deploy", "succeeded", "r2", at(1, 0, 6), at(1, 0, 10), at(1, 0, 30)),
    # failed at d2 00:20, rolled back by d2 00:22: restored in 120 s
    Recorded(
        3,
        S,
        "deploy",
        "failed",
        "r3",
        at(2, 0, 6),
        at(2, 0, 10),
        at(2, 0, 22),
        failed=at(2, 0, 20),
        rollback="succeeded",
        reason="verify failed: ./scripts/smoke.sh exited 1",
    ),
    # lead 2400 s
    Recorded(4, S, "deploy", "succeeded", "r4", at(3, 0, 6), at(3, 0, 10), at(3, 0, 40)),
    # never started: counts nowhere
    Recorded(5, S, "deploy", "superseded", "r5", at(4, 0, 11), None, at(4, 0, 12)),
    Recorded(
        6,
        S,
        "deploy",
        "cancelled",
        "r5",
        at(4, 0, 12),
        None,
        at(4, 0, 15),
        reason="aborted by admin before it started",
    ),
    # -- production ----------------------------------------------------------------------
    # before day 0: lead d-1 01:20 - d-1 00:00 = 4800 s
    Recorded(7, P, "deploy", "succeeded", "r0", at(-1, 0, 30), at(-1, 1), at(-1, 1, 20)),
    # lead 01:30 = 5400 s
    Recorded(8, P, "deploy", "succeeded", "r1", at(0, 0, 30), at(0, 1), at(0, 1, 30)),
    # lead 02:30 = 9000 s; undone by #10 below
    Recorded(9, P, "deploy", "succeeded", "r2", at(1, 1, 30), at(1, 2), at(1, 2, 30)),
    # a person rolls back to r1: #9 is a failed change, failed d1 03:00, restored 03:01 (60 s)
    Recorded(10, P, "rollback", "succeeded", "r1", at(1, 2, 59), at(1, 3), at(1, 3, 1)),
    # aborted by a person (rolled back): not a change that was put to the test
    Recorded(
        11,
        P,
        "deploy",
        "cancelled",
        "r4",
        at(3, 0, 30),
        at(3, 1),
        at(3, 1, 20),
        rollback="succeeded",
        reason="aborted by admin",
    ),
    # failed d3 02:10 and its rollback did not complete (a host offline): restored only by
    # the next success, #13 at d4 02:10, 86400 s later
    Recorded(
        12,
        P,
        "deploy",
        "failed",
        "r4",
        at(3, 1, 30),
        at(3, 2),
        at(3, 2, 15),
        failed=at(3, 2, 10),
        rollback="failed",
        reason="host web-2 lost its connection to the server during 'batch 1' "
        "(unreachable for 10 s); web-2 not connected: the previous release is written",
    ),
    # commit time unknown: lead d4 02:10 - run created d4 00:10 = 7200 s
    Recorded(13, P, "deploy", "succeeded", "r5", at(4, 0, 30), at(4, 1), at(4, 2, 10)),
    Recorded(14, P, "deploy", "superseded", "r6", at(5, 0, 5), None, at(5, 0, 10)),
    # lead 03:30 = 12600 s; undone by #17 below
    Recorded(15, P, "deploy", "succeeded", "r6", at(5, 2, 30), at(5, 3), at(5, 3, 30)),
    # failed before touching any host (no rollback step): the previous release never
    # stopped serving; failed and restored at d6 01:01 (0 s)
    Recorded(
        16,
        P,
        "deploy",
        "failed",
        "r7",
        at(6, 0, 30),
        at(6, 1),
        at(6, 1, 1),
        reason="host web-1 was removed during the deployment",
    ),
    # a rollback that failed: #15 failed at d7 01:00; restored by #18 at d7 02:02 (3720 s)
    Recorded(17, P, "rollback", "failed", "r5", at(7, 0, 59), at(7, 1), at(7, 1, 5)),
    # a second go at undoing #15: the same failure, not a new one
    Recorded(18, P, "rollback", "succeeded", "r5", at(7, 1, 59), at(7, 2), at(7, 2, 2)),
    # lead d10 01:30 - d10 00:30 = 3600 s
    Recorded(19, P, "deploy", "succeeded", "r8", at(10, 0, 40), at(10, 1), at(10, 1, 30)),
]


def records(t0: datetime) -> list[DeploymentRecord]:
    commits = {c.release: c for c in COMMITS}
    out = []
    for d in HISTORY:
        commit = commits[d.release]
        out.append(
            DeploymentRecord(
                id=d.id,
                environment=d.environment,
                kind=d.kind,
                state=d.state,
                created_at=t0 + d.created,
                started_at=t0 + d.started if d.started is not None else None,
                finished_at=t0 + d.finished,
                failed_at=t0 + d.failed if d.failed is not None else None,
                rollback=d.rollback,
                committed_at=t0 + commit.committed if commit.committed is not None else None,
                run_created_at=t0 + commit.run_created,
            )
        )
    return out


# The whole history, d-2 to d11 (13 days): what the server test sees in its 30-day window
# (with 30 days instead of 13 as the divisor of the frequency).
#
# staging: 3 successful deploys (#1 #2 #4); lead times 1200, 1800, 2400: median 1800,
#   p90 = the ⌈2.7⌉ = 3rd = 2400; changes #1-#4 = 4 (#5 superseded, #6 cancelled), of
#   which #3 failed: 1/4; one failure (#3), restored in 120 s.
# production: 6 successful deploys (#7 #8 #9 #13 #15 #19); lead times sorted 3600, 4800,
#   5400, 7200 (from the run), 9000, 12600: median (5400 + 7200) / 2 = 6300, p90 = the
#   ⌈5.4⌉ = 6th = 12600; changes: #7 #8 #9 #12 #13 #15 #16 #19 = 8 (#11 cancelled, #14
#   superseded), failed: #9 (undone by #10), #12, #15 (undone by #17), #16 = 4, rate 0.5;
#   failures: #9 60 s, #12 86400 s, #16 0 s, #15 3720 s (#18 undoes nothing new): median
#   of 0, 60, 3720, 86400 = (60 + 3720) / 2 = 1890.
WHOLE = {
    S: {
        "deployments": 3,
        "lead_time": 1800.0,
        "lead_time_p90": 2400.0,
        "lead_time_from_run": 0,
        "changes": 4,
        "failed_changes": 1,
        "change_failure_rate": 0.25,
        "failures": 1,
        "restored": 1,
        "time_to_restore": 120.0,
    },
    P: {
        "deployments": 6,
        "lead_time": 6300.0,
        "lead_time_p90": 12600.0,
        "lead_time_from_run": 1,
        "changes": 8,
        "failed_changes": 4,
        "change_failure_rate": 0.5,
        "failures": 4,
        "restored": 4,
        "time_to_restore": 1890.0,
    },
}
