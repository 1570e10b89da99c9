"""What a notification says: facts about a run or a deployment in, title and body out.

Pure functions over plain data, so every message can be checked with a table of
cases. Each body has the same labelled lines, in this order, so that a human
skims it and a script can parse it:

    What:  what happened, in one sentence
    Where: app, environment, hosts
    Release: release id and short commit
    Why:   the reason recorded (a step's error, the judge's evidence…)
    Done:  what conveyor already did about it
    Next:  what a person may do (only when there is something to do)
    Link:  the dashboard page
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from conveyor.config import Notify

KINDS = ("failure", "rollback", "approval", "success", "announce")
SHORT_SHA = 7


@dataclass(frozen=True)
class Message:
    """One notification: the kinds of event it is about, and its text."""

    kinds: frozenset[str]
    title: str
    body: str

    @property
    def event(self) -> str:
        """The kinds, comma-separated in a fixed order (what the database keeps)."""
        return ",".join(k for k in KINDS if k in self.kinds)


@dataclass(frozen=True)
class RollbackFacts:
    """The rollback step of a failed deployment (automatic) or of a failed rollback."""

    state: str  # succeeded | failed | running…
    hosts: Sequence[str]
    to: str | None  # the release the hosts went back to (None: nothing ran there before)
    reason: str | None = None


@dataclass(frozen=True)
class DeploymentFacts:
    """A deployment as a notification tells it."""

    id: int
    app: str
    environment: str
    kind: str  # deploy | rollback | contract
    state: str
    release: str
    sha: str
    link: str
    hosts: Sequence[str] = ()
    inventory: str | None = None  # the hosts command, when the hosts are not known yet
    strategy: str = ""
    previous_release: str | None = None
    reason: str | None = None
    failed_step: str | None = None
    rollback: RollbackFacts | None = None
    run: int | None = None
    trigger: str = ""
    triggered_by: str = ""


@dataclass(frozen=True)
class RunFacts:
    """A run as a notification tells it."""

    id: int
    app: str
    sha: str
    link: str
    state: str
    reason: str | None = None
    ref: str | None = None
    failed_step: str | None = None  # e.g. "test step 'unit tests'"
    release: str | None = None
    log_tail: Sequence[str] = field(default_factory=tuple)
    trigger: str = ""
    triggered_by: str = ""


def recipients(targets: Iterable[Notify], kinds: frozenset[str]) -> list[str]:
    """The URLs that want a message of these kinds: each once, whatever it subscribed to."""
    urls: list[str] = []
    for target in targets:
        if kinds & set(target.on) and target.url not in urls:
            urls.append(target.url)
    return urls


def deployment_ended(f: DeploymentFacts) -> Message | None:
    """The message for a deployment that ended, or None when nobody needs to hear of it.

    A cancelled or superseded deployment is the act of a person (an abort, a
    rollback, a newer release) who already knows; its replacement reports.
    """
    if f.state == "succeeded":
        return _succeeded(f)
    if f.state == "failed":
        return _failed(f)
    return None


def approval_needed(f: DeploymentFacts) -> Message:
    title = f"{f.app} {f.environment}: release {f.release} waits for approval"
    approve = f"conveyor approve {f.run}" if f.run is not None else "approve it in the dashboard"
    lines = {
        "What": f"deployment {f.id} of release {f.release} to {f.environment} needs an "
        f"approval before it starts{_triggered(f)}",
        "Where": _where(f),
        "Release": _release(f.release, f.sha),
        "Why": f"{f.environment} has `approval: required`",
        "Done": f"nothing changed yet; {f.environment} keeps serving "
        f"{f.previous_release or 'what it serves now'}",
        "Next": f"{approve} (or `conveyor abort {f.run}`)" if f.run is not None else approve,
        "Link": f.link,
    }
    return Message(frozenset({"approval"}), title, _body(lines))


def run_failed(f: RunFacts) -> Message:
    if f.reason == "interrupted":
        happened = "was interrupted twice by a server stop and gave up"
    else:
        happened = "failed" + (f" at {f.failed_step}" if f.failed_step else "")
    title = f"{f.app}: run {f.id} {happened}"
    what = f"run {f.id} of {f.app} {happened}"
    branch = f" on {f.ref.removeprefix('refs/heads/')}" if f.ref else ""
    why = f.reason or "no reason recorded"
    if f.log_tail:
        why += "\nLast lines of its log:\n" + "\n".join(f"  {line}" for line in f.log_tail)
    lines = {
        "What": f"{what} (commit {_short(f.sha)}{branch}{_triggered_run(f)})",
        "Where": f"app {f.app}, the pipeline (test and build); no environment and no host "
        "was touched",
        "Release": _release(f.release, f.sha)
        if f.release
        else f"none built, commit {_short(f.sha)}",
        "Why": why,
        "Done": "stopped the run; no release was promoted, every environment keeps its release",
        "Link": f.link,
    }
    return Message(frozenset({"failure"}), title, _body(lines))


# -- deployments ----------------------------------------------------------


def _succeeded(f: DeploymentFacts) -> Message:
    hosts = _hosts(f)
    if f.kind == "rollback":
        title = f"{f.app} {f.environment}: rolled back to {f.release}"
        what = f"rollback {f.id} of {f.environment} to release {f.release} succeeded"
        back_from = f" from {f.previous_release}" if f.previous_release else ""
        done = f"switched {hosts}{back_from} back to {f.release}"
        kinds = frozenset({"success", "rollback"})
        why = f.reason or f"asked by {f.triggered_by or 'someone'}"
    elif f.kind == "contract":
        title = f"{f.app} {f.environment}: contract migration of {f.release} applied"
        what = f"contract {f.id}: migrations.contract of release {f.release} ran in {f.environment}"
        done = f"the migration ran on {hosts}; {f.environment} keeps serving {f.release}"
        kinds = frozenset({"success"})
        why = f"no host serves or keeps warm a release older than {f.release} any more"
    else:
        title = f"{f.app} {f.environment}: release {f.release} deployed"
        what = f"deployment {f.id} of release {f.release} to {f.environment} succeeded"
        was = f"previously {f.previous_release}" if f.previous_release else "the first release"
        done = f"{hosts} now serve {f.release} ({was})"
        kinds = frozenset({"success"})
        why = f"{f.strategy} deployment{_triggered(f)}" if f.strategy else "deployment"
    lines = {
        "What": what,
        "Where": _where(f),
        "Release": _release(f.release, f.sha),
        "Why": why,
        "Done": done,
        "Link": f.link,
    }
    return Message(kinds, title, _body(lines))


def _failed(f: DeploymentFacts) -> Message:
    rb = f.rollback
    noun = {"rollback": "rollback", "contract": "contract migration"}.get(f.kind, "deployment")
    at = f" at step {f.failed_step!r}" if f.failed_step else ""
    what = f"{noun} {f.id} of release {f.release} to {f.environment} failed{at}"
    if rb is None:
        kinds = frozenset({"failure", "rollback"} if f.kind == "rollback" else {"failure"})
        title = f"{f.app} {f.environment}: {noun} of {f.release} failed, nothing changed"
        done = (
            f"nothing: no host was changed; {f.environment} keeps serving "
            f"{f.previous_release or 'what it served before'}"
        )
    else:
        kinds = frozenset({"failure", "rollback"})
        back = ", ".join(rb.hosts) or "no host"
        to = rb.to or "nothing (no release ran there before)"
        if rb.state == "succeeded":
            title = f"{f.app} {f.environment}: {f.release} failed and was rolled back to {to}"
            what += " and was rolled back automatically"
            done = f"rolled back {back} to {to}"
        else:
            title = f"{f.app} {f.environment}: {f.release} failed and its rollback did not complete"
            what += "; the automatic rollback did not complete"
            done = f"tried to roll back {back} to {to}, which {rb.state}" + (
                f": {rb.reason}" if rb.reason else ""
            )
    lines = {
        "What": what + _triggered(f),
        "Where": _where(f),
        "Release": _release(f.release, f.sha),
        "Why": f.reason or "no reason recorded",
        "Done": done,
        "Link": f.link,
    }
    return Message(kinds, title, _body(lines))


@dataclass(frozen=True)
class FlagStopFacts:
    """A guarded rollout of a flag the judge stopped (the flag turned off everywhere)."""

    app: str
    environment: str
    flag: str
    percent: int  # the step it was stopped at
    hosts: Sequence[str]
    release: str | None  # what the environment serves
    sha: str | None
    reason: str  # the judge's failed checks, or why it gave up
    link: str
    started_by: str
    gave_up: bool = False  # too few requests with the flag on to judge, not a regression


def flag_stopped(f: FlagStopFacts) -> Message:
    """A rolled-back deployment's message, for a flag: the same labelled lines."""
    hosts = ", ".join(f.hosts) or "no host"
    release = "none serving" if f.release is None else f.release
    if f.release is not None and f.sha:
        release = _release(f.release, f.sha)
    failed = "gave up for want of traffic" if f.gave_up else "failed"
    lines = {
        "What": f"guarded rollout of flag {f.flag} {failed} at {f.percent}% and the flag was "
        f"turned off (started by {f.started_by})",
        "Where": f"app {f.app}, environment {f.environment}, hosts {hosts}",
        "Release": release,
        "Why": f.reason,
        "Done": f"turned {f.flag} off for everyone on {hosts}",
        "Link": f.link,
    }
    title = f"{f.app} {f.environment}: flag {f.flag} {failed} at {f.percent}% and was turned off"
    return Message(frozenset({"failure", "rollback"}), title, _body(lines))


# -- pieces ---------------------------------------------------------------


def _short(sha: str) -> str:
    return sha[:SHORT_SHA]


def _release(release: str | None, sha: str) -> str:
    return f"{release}, commit {_short(sha)}"


def _hosts(f: DeploymentFacts) -> str:
    if f.hosts:
        return ", ".join(f.hosts)
    if f.inventory:
        return f"the hosts printed by `{f.inventory}`"
    return "no host"


def _where(f: DeploymentFacts) -> str:
    return f"app {f.app}, environment {f.environment}, hosts {_hosts(f)}"


def _triggered(f: DeploymentFacts) -> str:
    if f.trigger == "pipeline" and f.run is not None:
        return f" (promoted by run {f.run})"
    if f.triggered_by:
        return f" (started by {f.triggered_by})"
    return ""


def _triggered_run(f: RunFacts) -> str:
    if f.triggered_by:
        return f", {f.trigger or 'triggered'} by {f.triggered_by}"
    return f", {f.trigger}" if f.trigger else ""


def _body(lines: dict[str, str]) -> str:
    return "\n".join(f"{label}: {text}" for label, text in lines.items())
