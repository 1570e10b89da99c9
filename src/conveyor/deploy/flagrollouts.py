"""Guarded rollouts of flags, driven: the server's task that judges each running one.

Every LOOK_EVERY seconds (or when woken), for each rollout the database says is
running: read the routers' counters of the flag's answers on the environment's hosts
(a RouterSource over their reports' `flags`), let the judge look (its state kept in the
rollout's record, so a restarted server continues the same tests), and act on
guarded.next_move: raise the percentage to the next step, complete, or turn the flag
off everywhere with the judge's evidence in its history and a notification. Each act
is one transaction, committed before the hosts are woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.analysis.judge import JudgeState, Look, decide, observe, start_window
from conveyor.analysis.sources import RouterSource
from conveyor.deploy import guarded
from conveyor.deploy.desired import Notifier
from conveyor.deploy.flagstate import hosts_serving, hosts_woken, newest_config
from conveyor.deploy.ledger import host_views
from conveyor.notify import Announcer
from conveyor.notify.messages import FlagStopFacts
from conveyor.protocol import ReleaseCounters, RouterMetrics
from conveyor.protocol.flags import GuardedRolloutStart
from conveyor.store import flags as store
from conveyor.store.models import App, Flag, FlagRollout, utcnow
from conveyor.store.outage import OUTAGE
from conveyor.threads import Wakeup, in_thread

log = logging.getLogger("conveyor.flags")

LOOK_EVERY = 1.0  # seconds between two looks of the judge at a running rollout
BY = "conveyor (guarded rollout)"


def begin(
    session: Session, app: App, env: str, entry: store.Entry, start: GuardedRolloutStart, by: str
) -> FlagRollout:
    """A new guarded rollout (not committed): the flag on at the first step's percentage;
    a rollout of the same flag under way is cancelled."""
    cancel(session, entry.row, f"replaced by a new guarded rollout started by {by}")
    steps = ",".join(map(str, start.steps))
    after = entry.state.model_copy(update={"enabled": True, "rollout": start.steps[0]})
    note = f"guarded rollout started: steps {steps}%, {start.step_pause:g} s each"
    row = store.save(session, app.id, env, entry, after, by, note=note)
    rollout = FlagRollout(
        steps=json.dumps(start.steps), step_pause=start.step_pause, step=0, started_by=by
    )
    row.rollouts.append(rollout)
    return rollout


def cancel(session: Session, row: Flag | None, reason: str) -> FlagRollout | None:
    """A person took over the flag: its guarded rollout under way ends (not committed)."""
    running = store.running_rollout(row)
    if running is not None:
        running.state, running.reason, running.ended_at = "cancelled", reason, utcnow()
    return running


@dataclass(frozen=True)
class Watched:
    """What the judge reads for one running rollout: where, and which answers."""

    rollout: int
    app: str
    hosts: list[str]
    on: list[str]
    off: str


class FlagRollouts:
    """The server's driver of guarded rollouts (one asyncio task, `serve`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        notifier: Notifier,
        announcer: Announcer | None = None,
    ) -> None:
        self.sessions = sessions
        self.notifier = notifier
        self.announcer = announcer
        self.source = RouterSource(self._reports)
        self._wake = Wakeup()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def serve(self) -> None:
        self._wake.bind()
        while not self._stopping:
            away = None
            try:
                await self.look()
            except Exception as exc:
                away = OUTAGE.turn_failed(exc, "guarded rollouts")
                if away is None:
                    log.exception("guarded rollouts: a look failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(away or 0, LOOK_EVERY))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def look(self) -> None:
        """One look at every running rollout."""
        for w in await in_thread(self._running):
            counters = await self.source.read(w.app, [*w.on, w.off], w.hosts)
            on, off = guarded.on_and_off(counters, w.on, w.off)
            woken = await in_thread(self._judge, w.rollout, on, off, time.time())
            for host in woken:
                self.notifier.changed(host)

    def _reports(self, hosts: list[str]) -> dict[str, RouterMetrics | None]:
        """The hosts' last router reports, with their flags' answers as "releases"."""
        with self.sessions() as session:
            views = host_views(session, hosts)
        return {
            n: guarded.flags_view(v.observed.metrics if v.observed else None)
            for n, v in views.items()
        }

    def _running(self) -> list[Watched]:
        with self.sessions() as session:
            rows = session.scalars(
                select(FlagRollout).where(FlagRollout.state == store.RUNNING)
            ).all()
            out = []
            for r in rows:
                flag = r.flag
                app = session.get_one(App, flag.app_id)
                hosts = [h.name for h in hosts_serving(session, app, flag.environment)]
                variants = [v.name for v in store.state_of(flag).variants]
                on, off = guarded.answer_keys(flag.name, variants)
                out.append(Watched(r.id, app.name, hosts, on, off))
            return out

    def _judge(
        self, rollout_id: int, on: ReleaseCounters, off: ReleaseCounters, now: float
    ) -> list[str]:
        """The judge's look and its act, committed; the hosts to wake."""
        with self.sessions() as session:
            rollout = session.get(FlagRollout, rollout_id)
            if rollout is None or rollout.state != store.RUNNING:
                return []
            flag = rollout.flag
            app = session.get_one(App, flag.app_id)
            config = newest_config(session, app)
            env = config.environments.get(flag.environment) if config else None
            settings = guarded.settings(env.analysis if env else None)
            state = JudgeState.model_validate_json(rollout.judge) if rollout.judge else None
            state = observe(state or JudgeState(), Look(at=now, canary=on, baseline=off), settings)
            judgement = decide(state, settings, now)
            steps: list[int] = json.loads(rollout.steps)
            started = rollout.step_started_at.replace(tzinfo=UTC).timestamp()
            give_up = config.flags.give_up if config else guarded.DEFAULT_GIVE_UP
            move = guarded.next_move(
                guarded.StepLook(
                    steps,
                    rollout.step,
                    started,
                    rollout.step_pause,
                    now,
                    judgement,
                    give_up=give_up,
                    min_requests=settings.min_requests,
                )
            )
            rollout.judgement = judgement.model_dump_json()
            woken: list[str] = []
            entry = store.Entry(flag.name, flag.description, False, store.state_of(flag), flag)
            evidence = guarded.evidence_text(judgement)
            if move.act in (guarded.Act.STOP, guarded.Act.GIVE_UP):
                gave_up = move.act == guarded.Act.GIVE_UP
                after = entry.state.model_copy(update={"enabled": False})
                by_whom = (
                    "turned off: the guarded rollout" if gave_up else "turned off by the judge"
                )
                note = f"{by_whom} at {steps[rollout.step]}%: {move.why}\n{evidence}"
                store.save(session, app.id, flag.environment, entry, after, BY, note=note)
                rollout.state = store.GAVE_UP if gave_up else "stopped"
                rollout.reason, rollout.ended_at = move.why, utcnow()
                woken = hosts_woken(session, app, flag.environment)
                if self.announcer is not None:
                    facts = FlagStopFacts(
                        app=app.name,
                        environment=flag.environment,
                        flag=flag.name,
                        percent=steps[rollout.step],
                        hosts=woken,
                        release=None,
                        sha=None,
                        reason=move.why,
                        link="",
                        started_by=rollout.started_by,
                        gave_up=gave_up,
                    )
                    self.announcer.flag_stopped(session, app, rollout.id, facts)
            elif move.act == guarded.Act.ADVANCE:
                rollout.step += 1
                rollout.step_started_at = utcnow()
                percent = steps[rollout.step]
                after = entry.state.model_copy(update={"rollout": percent})
                note = f"guarded rollout step {rollout.step + 1} of {len(steps)}: {percent}%\n"
                store.save(
                    session, app.id, flag.environment, entry, after, BY, note=note + evidence
                )
                state = start_window(state)
                woken = hosts_woken(session, app, flag.environment)
            elif move.act == guarded.Act.COMPLETE:
                rollout.state, rollout.reason, rollout.ended_at = "completed", move.why, utcnow()
                woken = hosts_woken(session, app, flag.environment)  # no more counting
            rollout.judge = state.model_dump_json()
            session.commit()
            if move.act != guarded.Act.WAIT:
                log.info(
                    "guarded rollout " + move.act,
                    extra={"rollout": rollout_id, "flag": flag.name, "why": move.why},
                )
            return woken
