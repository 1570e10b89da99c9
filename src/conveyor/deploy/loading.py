"""Executing the `load:` verify checks: drive the load, record it, judge it against the
previous release's record from the same environment (load/compare.py decides)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.analysis.judge import Settings
from conveyor.config import Environment
from conveyor.config.environment import VerifyCheck
from conveyor.config.load import LoadTest
from conveyor.deploy.checks import Reach
from conveyor.deploy.ledger import Ledger
from conveyor.load.compare import LoadVerdict, Measured, judge_load, settings_for
from conveyor.load.drive import LoadError, drive
from conveyor.load.wire import LoadPlan, LoadSample, LoadSummary
from conveyor.protocol.metrics import ReleaseCounters
from conveyor.store.models import Deployment, LoadRecord
from conveyor.threads import in_thread


def test_name(load: LoadTest) -> str:
    """What makes two load tests comparable: the same rate over the same paths."""
    return f"{load.rate:g}/s GET {' '.join(load.paths)}"[:255]


class LoadTester(Ledger):
    """The engine's part that runs an environment's load tests in its verify step."""

    async def _load_tests(
        self, deployment_id: int, step_id: int, env: Environment, where: Reach
    ) -> list[str]:
        """Run each load check in turn; the failures (none: all passed), logged."""
        failed: list[str] = []
        for check in env.verify:
            if check.load is None:
                continue
            verdict = await self._load_test(deployment_id, check, env, where)
            await self._log(step_id, [f"load test {test_name(check.load)}:", *verdict.lines])
            if verdict.verdict == "fail":
                failed.append(f"load test {test_name(check.load)}: {verdict.reason}")
                break
        return failed

    async def _load_test(
        self, deployment_id: int, check: VerifyCheck, env: Environment, where: Reach
    ) -> LoadVerdict:
        load = check.load
        assert load is not None
        if not where.urls:
            return LoadVerdict("fail", [], "no host's router to send load to")
        plan = LoadPlan(
            targets=list(where.urls.values()),
            paths=load.paths,
            rate=load.rate,
            duration=load.duration,
            host_header=where.host_header,
        )
        try:
            samples, summary = await drive(plan)
        except LoadError as exc:
            return LoadVerdict("fail", [], str(exc))
        settings = settings_for(Settings.of(env.analysis) if env.analysis else None)
        return await in_thread(
            self._judge_and_record,
            deployment_id,
            test_name(load),
            load.rate,
            samples,
            summary,
            settings,
        )

    def _judge_and_record(
        self,
        deployment_id: int,
        test: str,
        rate_asked: float,
        samples: list[LoadSample],
        summary: LoadSummary,
        settings: Settings,
    ) -> LoadVerdict:
        with self.sessions() as session:
            d = session.get_one(Deployment, deployment_id)
            counters = samples[-1].counters if samples else ReleaseCounters()
            now = Measured(
                d.release_id,
                rate_asked,
                summary.rate,
                counters,
                (summary.p50, summary.p95, summary.p99),
            )
            before = previous(session, d, test)
            verdict = judge_load(samples, now, before, settings)
            if summary.errors:
                kinds = "; ".join(f"{n} x {kind}" for kind, n in summary.errors.items())
                lines = [*verdict.lines, f"failures: {kinds}"]
                verdict = LoadVerdict(verdict.verdict, lines, verdict.reason)
            session.add(
                LoadRecord(
                    app_id=d.app_id,
                    environment=d.environment,
                    test=test,
                    release_id=d.release_id,
                    deployment_id=d.id,
                    rate_asked=now.rate_asked,
                    rate=summary.rate,
                    seconds=summary.seconds,
                    requests=summary.requests,
                    failures=summary.failures,
                    p50=summary.p50,
                    p95=summary.p95,
                    p99=summary.p99,
                    counters=counters.model_dump_json(),
                    verdict=verdict.verdict,
                )
            )
            session.commit()
            self._committed("load test recorded", deployment=d.id, verdict=verdict.verdict)
        return verdict


def previous(session: Session, d: Deployment, test: str) -> Measured | None:
    """The last record of another release that passed this test here (or set its baseline):
    a failed release is never what the next one is judged against."""
    row = session.scalars(
        select(LoadRecord)
        .where(
            LoadRecord.app_id == d.app_id,
            LoadRecord.environment == d.environment,
            LoadRecord.test == test,
            LoadRecord.release_id != d.release_id,
            LoadRecord.verdict.in_(("baseline", "pass")),
        )
        .order_by(LoadRecord.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return Measured(
        row.release_id,
        row.rate_asked,
        row.rate,
        ReleaseCounters.model_validate_json(row.counters),
        (row.p50, row.p95, row.p99),
    )
