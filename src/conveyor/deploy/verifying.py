"""Executing a verify step: the environment's HTTP checks and scripts against the release.

A `compat` step runs the same checks right after the expand migration, while the
previous release still takes all of the traffic: they reach it on the migrated schema.
If they fail, the migration is not backward compatible and the deployment stops there.
"""

from __future__ import annotations

import json

from conveyor.config import Config, Environment
from conveyor.deploy import checks
from conveyor.deploy.ledger import host_views
from conveyor.deploy.loading import LoadTester
from conveyor.deploy.progress import HostView
from conveyor.store.models import Deployment, DeploymentStep, Release, utcnow
from conveyor.store.secrets import every_value
from conveyor.threads import in_thread


class Verifier(LoadTester):
    """The engine's part that runs a deployment's verify step."""

    async def _verify(self, deployment_id: int, step_id: int, env: Environment) -> None:
        def read() -> tuple[
            list[str], dict[str, HostView], Release, list[str], dict[str, str], str | None
        ]:
            with self.sessions() as session:
                d = session.get_one(Deployment, deployment_id)
                step = session.get_one(DeploymentStep, step_id)
                if step.state == "pending":
                    step.state, step.started_at = "running", utcnow()
                    session.commit()
                hosts = json.loads(d.touched)
                release = d.release
                previous = d.previous_release if step.kind == "compat" else None
                meta = {
                    "CONVEYOR_APP": d.app.name,
                    "CONVEYOR_ENVIRONMENT": d.environment,
                    "CONVEYOR_RELEASE": previous or release.id,
                    "CONVEYOR_SHA": release.sha,
                    "CONVEYOR_DEPLOYMENT": str(d.id),
                }
                secrets = every_value(session, d.app)
                return hosts, host_views(session, hosts), release, secrets, meta, previous

        hosts, views, release, secrets, meta, previous = await in_thread(read)
        config = Config.model_validate_json(release.config or "{}")
        assert config.service is not None
        where = checks.reach(views, hosts, config.service, env)
        lines: list[str] = []
        failed: list[str] = []
        results = await checks.http_checks(
            env.verify, where.urls, host_header=where.host_header, https=where.https
        )
        lines += [r.line for r in results]
        failed += [r.line for r in results if not r.ok]
        scripts = [c for c in env.verify if c.run is not None]
        if scripts and not failed:
            cwd = await self._release_files(release, deployment_id)
            env_vars = meta | where.script_env()
            for check in scripts:
                assert check.run is not None
                result = await checks.run_script(check.run, cwd, env_vars, check.timeout, secrets)
                lines.append(result.line)
                if not result.ok:
                    failed.append(result.line.split("\n", 1)[0])
                    break
        await self._log(step_id, lines)
        if not failed and previous is None:  # load tests judge the new release only
            failed += await self._load_tests(deployment_id, step_id, env, where)
        if failed:
            what = "verify failed: "
            if previous is not None:
                what = (
                    f"the previous release {previous} failed the verify checks on the migrated "
                    "schema: the migration is not backward compatible (split it: expand now, "
                    "contract later): "
                )
            await self._fail_now(deployment_id, step_id, what + "; ".join(failed))
            return
        await self._end_step(deployment_id, step_id)
