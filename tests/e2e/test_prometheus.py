"""The Prometheus source against a real Prometheus scraping the agents' `--metrics`.

Real server, two agents with their routers on 127.0.0.81-82 (each serving its
router's counters on `--metrics`), the sample app under load, and Debian's
`/usr/bin/prometheus` scraping both agents every second. The same traffic is read
through both sources and judged: they must say the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.analysis.judge import Look, Settings, Verdict, judge, replay
from conveyor.analysis.prometheus import PrometheusSource
from conveyor.analysis.sources import RouterSource
from conveyor.protocol import ReleaseCounters, RouterMetrics
from tests.fleet import Fleet, LoadGenerator, running_fleet
from tests.helpers import ManagedProcess, ServerProcess, free_port, wait_for

PROMETHEUS = "/usr/bin/prometheus"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.access(PROMETHEUS, os.X_OK),
        reason=f"{PROMETHEUS} is not installed (scripts/setup.sh installs Debian's prometheus)",
    ),
]
HOSTS = {"web-1": "127.0.0.81", "web-2": "127.0.0.82"}
SETTINGS = Settings(error_rate=0.01, p99=2.0, compare=True, min_requests=200)


class PrometheusProcess(ManagedProcess):
    """A real Prometheus on a loopback port, scraping `targets` every second."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.dir = tmp / "prometheus"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = targets
        self.log_path = tmp / "prometheus.log"
        self.query_log = self.dir / "queries.log"

    def start(self) -> PrometheusProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "query_log_file": str(self.query_log),
            },
            "scrape_configs": [
                {"job_name": "conveyor", "static_configs": [{"targets": self.targets}]}
            ],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.spawn(
            [
                PROMETHEUS,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            dict(os.environ),
        )
        try:
            wait_for(self._ready, timeout=60)
        except BaseException:
            self.kill()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def scraping(self) -> bool:
        """Every target scraped, and up."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": "up"}, timeout=5).json()
        values = [float(s["value"][1]) for s in r["data"]["result"]]
        return len(values) == len(self.targets) and all(v == 1 for v in values)

    def queries(self) -> list[str]:
        """The queries Prometheus was asked (its query log)."""
        if not self.query_log.exists():
            return []
        lines = self.query_log.read_text().splitlines()
        return [json.loads(line)["params"]["query"] for line in lines if line.strip()]


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS, metrics=True) as f:
        yield f


@pytest.fixture
def prometheus(fleet: Fleet, tmp_path: Path) -> Iterator[PrometheusProcess]:
    targets = [agent.metrics for agent in fleet.agents.values() if agent.metrics]
    prom = PrometheusProcess(tmp_path, targets).start()
    try:
        wait_for(prom.scraping, timeout=30, interval=0.5)
        yield prom
    finally:
        prom.stop()


def build(fleet: Fleet, label: str, environments: str = "", **config: Any) -> str:
    """A release of the sample app (no environments: nothing deploys it on its own)."""
    fleet.commit(label, environments, **config)
    run = fleet.server.wait_run(fleet.server.post("/api/apps/sample/runs", {})["id"])
    assert run["state"] == "succeeded", run
    return str(run["release"])


def router_source(fleet: Fleet) -> RouterSource:
    """The router source as the engine has it: the agents' reports, through the server."""

    def observe(hosts: list[str]) -> dict[str, RouterMetrics | None]:
        found = {}
        for host in hosts:
            raw = fleet.agents[host].observed().get("metrics")
            found[host] = RouterMetrics.model_validate(raw) if raw else None
        return found

    return RouterSource(observe)


Reading = dict[str, ReleaseCounters]


async def _both(
    a: RouterSource, b: PrometheusSource, releases: list[str]
) -> tuple[Reading, Reading]:
    hosts = list(HOSTS)
    return await asyncio.gather(
        a.read("sample", releases, hosts), b.read("sample", releases, hosts)
    )


def figures(c: ReleaseCounters) -> str:
    return f"{c.errors_5xx}/{c.requests} 5xx"


def test_prometheus_and_the_routers_judge_the_same_traffic_alike(
    fleet: Fleet, prometheus: PrometheusProcess
) -> None:
    good = build(fleet, "good")
    bad = build(fleet, "bad", error_rate=0.05)
    for agent in fleet.agents.values():
        agent.set("sample", {good: 50, bad: 50})
    for agent in fleet.agents.values():
        agent.wait_routed("sample", {good: 50, bad: 50})
    routers, prom = router_source(fleet), PrometheusSource(prometheus.url)
    releases = [good, bad]
    looks: dict[str, list[tuple[float, Reading]]] = {"router": [], "prometheus": []}

    def look() -> tuple[Reading, Reading]:
        now = time.time()
        r, p = asyncio.run(_both(routers, prom, releases))
        looks["router"].append((now, r))
        looks["prometheus"].append((now, p))
        return r, p

    look()
    started = time.monotonic()
    with LoadGenerator(fleet.urls(), clients=8, max_seconds=60) as load:
        for _ in range(15):
            time.sleep(1.0)
            look()
    result = load.result
    rate = result.sent / (time.monotonic() - started)
    assert not result.errors, result.errors[:5]

    def settled() -> bool:
        # every request the clients got an answer to, counted by both, and no more
        r, p = look()
        sent = {rel: result.releases[rel] + result.failed_releases[rel] for rel in releases}
        return all(r[rel].requests == p[rel].requests == sent[rel] for rel in releases)

    wait_for(settled, timeout=30, interval=1.0)
    final_r, final_p = looks["router"][-1][1], looks["prometheus"][-1][1]
    for rel in releases:
        assert final_r[rel].errors_5xx == final_p[rel].errors_5xx == result.failed_releases[rel]
        assert final_r[rel].latency_buckets == final_p[rel].latency_buckets

    verdicts: dict[tuple[str, str], Any] = {}
    for source, stream in looks.items():
        for canary, baseline in ((bad, good), (good, bad)):
            stream_looks = [
                Look(at=at, canary=reading[canary], baseline=reading[baseline])
                for at, reading in stream
            ]
            verdict = judge(stream_looks, SETTINGS)
            first_fail = next(
                (
                    i
                    for i, j in enumerate(replay(stream_looks, SETTINGS))
                    if j.verdict == Verdict.FAIL
                ),
                None,
            )
            verdicts[(source, canary)] = (verdict, first_fail)
    # during the load, the two differ by what the last report and the last scrape missed
    gaps = [
        abs(r[rel].requests - p[rel].requests)
        for (_, r), (_, p) in zip(looks["router"], looks["prometheus"], strict=True)
        for rel in releases
    ]
    print(
        f"\nload: {result.sent} requests, {sum(result.failed_releases.values())} 5xx, "
        f"{rate:.0f}/s over {len(looks['router'])} looks; largest gap between the sources "
        f"at one look: {max(gaps)} requests ({max(gaps) / max(rate, 1):.1f} s of traffic)"
    )
    for rel, name in ((good, "good"), (bad, "bad")):
        print(f"{name} {rel}: router {figures(final_r[rel])}, prometheus {figures(final_p[rel])}")
        for source in looks:
            verdict, first_fail = verdicts[(source, rel)]
            print(
                f"  {source:>10}: {verdict.verdict} after {verdict.requests} requests"
                + (f" (first fail at look {first_fail})" if first_fail is not None else "")
                + (f": {verdict.reasons[0]}" if verdict.reasons else "")
            )
    for source in looks:
        assert verdicts[(source, bad)][0].verdict == Verdict.FAIL, verdicts
        assert verdicts[(source, good)][0].verdict == Verdict.PASS, verdicts
    assert max(gaps) <= max(rate * 5, 50), gaps  # a report every 2 s, a scrape every 1 s


CANARY = """
environments:
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [50, 100]
    step_pause: 20s
    analysis:
      error_rate: 1%
      min_requests: 100
      source: {{prometheus: "{url}"}}
"""


def test_a_canary_judged_by_prometheus_is_rolled_back(
    fleet: Fleet, prometheus: PrometheusProcess
) -> None:
    environments = CANARY.format(url=prometheus.url)

    def ended(release: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            found = [
                d
                for d in fleet.server.get("/api/deployments?app=sample")
                if d["release"] == release
            ]
            if not found or found[0]["state"] not in ("succeeded", "failed", "cancelled"):
                return None
            return dict(fleet.server.get(f"/api/deployments/{found[0]['id']}"))

        result: dict[str, Any] = wait_for(done, timeout=120, interval=0.5)
        return result

    v1 = build(fleet, "v1", environments)
    assert ended(v1)["state"] == "succeeded"  # a first deployment: 100% at once
    with LoadGenerator(fleet.urls(), clients=8, max_seconds=120) as load:
        v2 = build(fleet, "v2", environments, error_rate=0.05)
        bad = ended(v2)
    assert not load.result.errors, load.result.errors[:5]
    assert bad["state"] == "failed", bad
    assert bad["reason"].startswith("analysis failed: error rate"), bad["reason"]
    failed = next(s for s in bad["steps"] if s["state"] == "failed")
    assert failed["weight"] == 50
    assert bad["steps"][-1]["kind"] == "rollback" and bad["steps"][-1]["state"] == "succeeded"
    for host in HOSTS:
        assert fleet.routed(host) == {v1: 100}
    # the engine asked Prometheus, about these releases on these hosts
    asked = [q for q in prometheus.queries() if v2 in q]
    assert any("conveyor_router_errors_5xx_total" in q for q in asked), prometheus.queries()[-5:]
    assert all('host=~"web-1|web-2"' in q for q in asked)
    judgement = failed["judgement"]
    print(
        f"\ncanary {v2} at 50% judged from Prometheus: {judgement['verdict']} after "
        f"{judgement['requests']} requests in {failed['duration']:.1f} s "
        f"({len(asked)} queries about it): {bad['reason']}"
    )
