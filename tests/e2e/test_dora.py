"""/metrics, GET /api/apps/{app}/dora and `conveyor status --dora` on a recorded history.

The history of tests/deploy/dora_history.py is written into a fresh server database
(migrated as the server migrates it), starting 15 days ago; the real server then reads
it. Its figures are the hand-computed ones of the unit tests, over a 30-day window.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.store.db import database_url, make_engine, migrate, session_factory
from conveyor.store.models import App, Deployment, DeploymentStep, Release, Run, utcnow
from tests.deploy.dora_history import COMMITS, HISTORY, WHOLE, P, S
from tests.helpers import ServerProcess, config, make_repo, running_server

DAYS = 30


def _record(data: Path) -> None:
    engine = make_engine(database_url(None, data))
    migrate(engine)
    t0 = utcnow().replace(second=0, microsecond=0) - timedelta(days=15)
    with session_factory(engine)() as session:
        app = App(name="shop", repo_url=str(data / "no-repo"), webhook_secret="s")
        session.add(app)
        session.flush()
        for c in COMMITS:
            run = Run(
                app_id=app.id,
                sha=c.sha,
                trigger="push",
                state="succeeded",
                release_id=c.release,
                committed_at=t0 + c.committed if c.committed is not None else None,
                created_at=t0 + c.run_created,
                started_at=t0 + c.run_created,
                finished_at=t0 + c.run_created + timedelta(minutes=1),
            )
            session.add(run)
            session.flush()
            session.add(
                Release(
                    id=c.release,
                    app_id=app.id,
                    sha=c.sha,
                    run_id=run.id,
                    sha256="0" * 64,
                    size=1,
                    created_at=t0 + c.run_created,
                )
            )
        session.add(  # a run whose tests failed: no release
            Run(app_id=app.id, sha="f" * 40, trigger="push", state="failed", created_at=t0)
        )
        for d in HISTORY:
            started = t0 + d.started if d.started is not None else None
            row = Deployment(
                id=d.id,
                app_id=app.id,
                environment=d.environment,
                release_id=d.release,
                kind=d.kind,
                strategy="switch" if d.kind == "rollback" else "rolling",
                trigger="rollback" if d.kind == "rollback" else "chain",
                state=d.state,
                reason=d.reason,
                created_at=t0 + d.created,
                started_at=started,
                finished_at=t0 + d.finished,
            )
            if started is not None:
                ended = t0 + (d.failed or d.finished)
                step = {"failed": "failed", "cancelled": "cancelled"}.get(d.state, "succeeded")
                row.steps.append(
                    DeploymentStep(
                        position=0,
                        kind="switch" if d.kind == "rollback" else "batch",
                        name="batch 1",
                        state=step,
                        reason=d.reason if step != "succeeded" else None,
                        started_at=started,
                        finished_at=ended,
                    )
                )
            if d.rollback is not None:
                row.steps.append(
                    DeploymentStep(
                        position=1,
                        kind="rollback",
                        name="roll back 1 host(s)",
                        state=d.rollback,
                        started_at=t0 + (d.failed or d.finished),
                        finished_at=t0 + d.finished,
                    )
                )
            session.add(row)
        session.commit()
    engine.dispose()


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    _record(data)
    with running_server(data) as server:
        yield server


def _expected(env: str) -> dict[str, Any]:
    figures = WHOLE[env]
    return {
        "environment": env,
        **figures,
        "deployment_frequency": pytest.approx(figures["deployments"] / DAYS),
    }


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_metrics_api_and_cli_agree_with_the_hand_computed_figures(
    recorded: ServerProcess,
) -> None:
    # the API: both environments, in the order they first saw a deployment
    report = recorded.get("/api/apps/shop/dora", params={"days": DAYS})
    assert report["app"] == "shop" and report["days"] == DAYS
    assert [e["environment"] for e in report["environments"]] == [S, P]
    for env in report["environments"]:
        assert env == _expected(env["environment"])
    only = recorded.get("/api/apps/shop/dora", params={"environment": P})
    assert [e["environment"] for e in only["environments"]] == [P]
    assert only["environments"][0] == _expected(P)
    assert recorded.http.get("/api/apps/nope/dora").status_code == 404
    typo = recorded.http.get("/api/apps/shop/dora", params={"environment": "prod"})
    assert typo.status_code == 404 and "staging, production" in typo.json()["detail"]

    # /metrics: no token, the Prometheus text format
    response = httpx.get(f"{recorded.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    shop = {"app": "shop"}
    deployments = {
        (S, "deploy", "succeeded"): 3,
        (S, "deploy", "failed"): 1,
        (S, "deploy", "superseded"): 1,
        (S, "deploy", "cancelled"): 1,
        (P, "deploy", "succeeded"): 6,
        (P, "deploy", "failed"): 2,
        (P, "deploy", "cancelled"): 1,
        (P, "deploy", "superseded"): 1,
        (P, "rollback", "succeeded"): 2,
        (P, "rollback", "failed"): 1,
    }
    found = {
        (dict(labels)["environment"], dict(labels)["kind"], dict(labels)["result"]): value
        for (name, labels), value in samples.items()
        if name == "conveyor_deployments_total"
    }
    assert found == deployments
    # #7 #8 #9 #13 #15 #19 took 20, 30, 30, 70, 30 and 30 minutes
    ok = {**shop, "environment": P, "kind": "deploy", "result": "succeeded"}
    assert samples[_key("conveyor_deployment_duration_seconds_count", **ok)] == 6
    assert samples[_key("conveyor_deployment_duration_seconds_sum", **ok)] == 12600
    assert samples[_key("conveyor_deployment_duration_seconds_bucket", **ok, le="1800.0")] == 5
    assert samples[_key("conveyor_deployment_duration_seconds_bucket", **ok, le="+Inf")] == 6
    # #3 verify, #11 aborted, #12 host offline (its rollback incomplete, still one); #16
    # touched nothing; #10 #17 #18 rollback deployments
    rollbacks = {
        dict(labels)["environment"] + " " + dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "conveyor_rollbacks_total"
    }
    assert rollbacks == {
        "staging verify": 1,
        "production aborted": 1,
        "production host_offline": 1,
        "production manual": 3,
    }
    assert samples[_key("conveyor_runs_total", **shop, result="succeeded")] == len(COMMITS)
    assert samples[_key("conveyor_runs_total", **shop, result="failed")] == 1
    for env in (S, P):
        labels = {**shop, "environment": env}
        figures = WHOLE[env]
        assert samples[
            _key("conveyor_dora_deployment_frequency_per_day", **labels)
        ] == pytest.approx(figures["deployments"] / DAYS)
        assert samples[_key("conveyor_dora_lead_time_seconds", **labels)] == figures["lead_time"]
        assert (
            samples[_key("conveyor_dora_change_failure_rate", **labels)]
            == figures["change_failure_rate"]
        )
        assert (
            samples[_key("conveyor_dora_time_to_restore_seconds", **labels)]
            == figures["time_to_restore"]
        )

    # the CLI: JSON alone, then the table
    done = recorded.cli("status", "--dora", "--json")
    assert done.returncode == 0, done.stderr
    [cli_report] = json.loads(done.stdout)
    assert cli_report["environments"] == report["environments"]
    table = recorded.cli("status", "--dora", "shop")
    assert table.returncode == 0, table.stderr
    assert "50% (4/8)" in table.stdout and "25% (1/4)" in table.stdout
    assert "1 lead time(s) counted from the run's start" in table.stdout
    refused = recorded.cli("status", "--dora", "--follow")
    assert refused.returncode == 2


def test_a_run_records_its_commits_committer_time(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = 1700000000  # what the commit says, not when the test runs
    monkeypatch.setenv("GIT_COMMITTER_DATE", f"{committed} +0200")
    make_repo(tmp_path / "repo", {"conveyor.yml": config("shop", ["true"])})
    server.add_app("shop", tmp_path / "repo")
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])
    assert run["state"] == "succeeded", run
    engine = make_engine(database_url(None, server.data))
    try:
        with session_factory(engine)() as session:
            stored = session.get_one(Run, run["id"]).committed_at
    finally:
        engine.dispose()
    assert stored == datetime.fromtimestamp(committed, UTC).replace(tzinfo=None)
