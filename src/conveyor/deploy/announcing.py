"""After a deployment: measure the release it replaced and the new one, for `announce: after`.

Read from the judge's own source for the environment (its `analysis.source`, else the
routers' counters) once the deployment has ended (after its monitor period, if any), then
queued by the Announcer in a transaction of its own.
"""

from __future__ import annotations

import json
import logging

from conveyor.analysis.sources import SourceError
from conveyor.analysis.window import error_rate, quantile
from conveyor.config import Analysis
from conveyor.deploy.gates import GateError, environment
from conveyor.deploy.ledger import Ledger
from conveyor.notify.announcements import Measured
from conveyor.protocol import ReleaseCounters
from conveyor.store.models import Deployment
from conveyor.threads import in_thread

log = logging.getLogger("conveyor.deploy")


def measured(counters: ReleaseCounters | None) -> Measured | None:
    if counters is None:
        return None
    return Measured(
        requests=counters.requests,
        error_rate=error_rate(counters),
        p95=quantile(counters, 0.95),
    )


class Announcing(Ledger):
    """The engine's part that measures a deployment for its `announce: after`."""

    async def _announce_after(self, deployment_id: int) -> None:
        if self.announcer is None:
            return
        try:
            wanted = await in_thread(self._after_wanted, deployment_id)
            if wanted is None:
                return
            app, hosts, releases, analysis = wanted
            source = self.metric_source(analysis) if analysis is not None else self.router_source
            error: str | None = None
            try:
                counters = await source.read(app, releases, hosts)
            except SourceError as exc:
                counters, error = {}, str(exc)
            await in_thread(self._queue_after, deployment_id, source.name, counters, error)
        except Exception:  # an announcement is never worth more than a log line
            log.exception(
                "could not announce a deployment's outcome", extra={"deployment": deployment_id}
            )

    def _after_wanted(
        self, deployment_id: int
    ) -> tuple[str, list[str], list[str], Analysis | None] | None:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            if d.kind != "deploy" or d.state != "succeeded":
                return None
            try:
                _, env = environment(d.release, d.environment)
            except GateError:
                return None
            if "after" not in env.announce:
                return None
            releases = [r for r in (d.previous_release, d.release_id) if r]
            return d.app.name, list(json.loads(d.touched)), releases, env.analysis

    def _queue_after(
        self,
        deployment_id: int,
        source: str,
        counters: dict[str, ReleaseCounters],
        error: str | None,
    ) -> None:
        assert self.announcer is not None
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            before = measured(counters.get(d.previous_release or ""))
            after = measured(counters.get(d.release_id))
            self.announcer.deployment_measured(d, source, before, after, error)
            session.commit()
