"""Whether a new deployment may join an environment: one waits its turn, one acts.

Pure: given what the environment already has (at most one pending and one acting
deployment, as the database holds), decide whether the new one is queued, and
what it ends (a queued older release is superseded; a rollback cancels what waits
and aborts what runs), or why it is refused. records.py applies the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from conveyor.store.models import DEPLOYMENT_ACTING, DEPLOYMENT_PENDING


@dataclass(frozen=True)
class Held:
    """A deployment the environment already has, pending or acting."""

    id: int
    kind: str  # deploy | rollback
    state: str
    release: str
    built: datetime  # when its release was built: which of two releases is newer
    forced: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Ask:
    """The deployment a request (or the promotion chain) wants to add."""

    kind: str  # deploy | rollback
    release: str
    built: datetime
    forced: bool = False


@dataclass(frozen=True)
class Admit:
    """Queue it; end these first (ids), each with the state and reason given."""

    supersede: list[int] = field(default_factory=list)  # pending deploys of an older release
    cancel: list[int] = field(default_factory=list)  # pending ones a rollback replaces
    abort: list[int] = field(default_factory=list)  # running ones a rollback stops


@dataclass(frozen=True)
class Refuse:
    """Not queued: `reason` says why and what to do; `state` is what a record of it says."""

    reason: str
    state: str = "superseded"  # for the promotion chain's record: superseded | cancelled
    holder: int | None = None  # the deployment that stands in the way


def admit(ask: Ask, held: list[Held], app: str, env: str) -> Admit | Refuse:
    """Whether `ask` may join `env` of `app`, which has the deployments `held`."""
    pending = [h for h in held if h.state in DEPLOYMENT_PENDING]
    acting = [h for h in held if h.state in DEPLOYMENT_ACTING]
    where = f"{env} of {app}"
    same_running = next(
        (
            a
            for a in acting
            if a.state == "running" and (a.kind, a.release) == (ask.kind, ask.release)
        ),
        None,
    )
    if ask.kind == "rollback":
        return _admit_rollback(ask, pending, acting, same_running, where)
    if same_running is not None:
        return Refuse(
            f"refused: release {ask.release} is already being deployed to {where}: "
            f"deployment #{same_running.id} (running)",
            holder=same_running.id,
        )
    supersede: list[int] = []
    for p in pending:
        refused = _behind(ask, p, where)
        if refused is not None:
            return refused
        supersede.append(p.id)
    return Admit(supersede=supersede)


def _admit_rollback(
    ask: Ask, pending: list[Held], acting: list[Held], same_running: Held | None, where: str
) -> Admit | Refuse:
    """A rollback goes before everything, unless the same rollback is running or queued."""
    if same_running is not None:
        return Refuse(
            f"refused: {where} is already rolling back to {ask.release}: "
            f"deployment #{same_running.id}",
            holder=same_running.id,
        )
    twin = next((p for p in pending if p.kind == "rollback" and p.release == ask.release), None)
    if twin is not None:
        return Refuse(
            f"refused: a rollback of {where} to {ask.release} is already queued: "
            f"deployment #{twin.id}",
            holder=twin.id,
        )
    return Admit(
        cancel=[p.id for p in pending], abort=[a.id for a in acting if a.state == "running"]
    )


def _behind(ask: Ask, p: Held, where: str) -> Refuse | None:
    """Whether a queued deployment `p` stands in the way of a deploy (None: supersede it)."""
    why = f" ({p.reason})" if p.reason else ""
    if p.kind == "rollback":
        return Refuse(
            f"refused: a rollback of {where} to {p.release} is queued and goes first: "
            f"deployment #{p.id}; deploy again once it has started, or abort it: "
            f"conveyor abort --deployment {p.id}",
            state="cancelled",
            holder=p.id,
        )
    if p.release == ask.release and not (ask.forced and not p.forced):
        return Refuse(
            f"refused: release {ask.release} is already queued for {where}: "
            f"deployment #{p.id}{why}",
            holder=p.id,
        )
    if p.release != ask.release and p.built > ask.built:
        return Refuse(
            f"refused: a newer release, {p.release}, is already queued for {where}: "
            f"deployment #{p.id}{why}; a queued release is superseded only by a newer "
            f"one (abort it first: conveyor abort --deployment {p.id})",
            holder=p.id,
        )
    return None
