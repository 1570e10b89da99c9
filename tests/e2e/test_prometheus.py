"""The Prometheus source against a real Prometheus scraping the agents' `--metrics`.

Real server, two agents with their routers on 127.0.0.81-82 (each serving its
router's counters on `--metrics`), the sample app under load, and Debian's
`/usr/bin/prometheus` scraping both agents every second. The same traffic is read
through both sources and judged: they must say the same.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
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
from tests.helpers import ManagedProcess, ServerProcess, free_port, plain_http, wait_for

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
            return plain_http.get(f"{self.url}/-/ready", timeout=1).status_code == 200
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
def router(request: pytest.FixtureRequest) -> str:
    """The router backend: embedded, unless a test is parametrized with another."""
    kind = str(getattr(request, "param", "embedded"))
    if kind == "haproxy" and shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/setup.sh installs it)")
    return kind


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path, router: str) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS, router=router, metrics=True) as f:
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


@pytest.mark.parametrize("router", ["embedded", "haproxy"], indirect=True)
def test_prometheus_and_the_routers_judge_the_same_traffic_alike(
    fleet: Fleet, prometheus: PrometheusProcess, router: str
) -> None:
    # every request 30 ms late: the releases' latency is the app's, not how the loaded
    # test machine schedules two identical sub-millisecond processes (a CI run saw one
    # 0.2 ms slower at its p95 for a while, and the latency test rightly said so)
    paced = {"slow_requests": 10**9, "slow_delay": 0.03}
    good = build(fleet, "good", **paced)
    bad = build(fleet, "bad", error_rate=0.05, **paced)
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
    with LoadGenerator(fleet.urls(), clients=8, max_seconds=60, rate=40) as load:
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
        f"\n{router} routers, load: {result.sent} requests, "
        f"{sum(result.failed_releases.values())} 5xx, "
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


def router_pid(fleet: Fleet, host: str) -> int | None:
    """The pid of the host's router process (None while there is none)."""
    socket = str(fleet.agents[host].data / "router.sock").encode()
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"conveyor.router" in cmd and socket in cmd:
            return int(entry.name)
    return None


def test_a_router_restart_sends_the_sum_back_but_not_the_source(
    fleet: Fleet, prometheus: PrometheusProcess
) -> None:
    v1 = build(fleet, "v1")
    for agent in fleet.agents.values():
        agent.set("sample", {v1: 100})
    for agent in fleet.agents.values():
        agent.wait_routed("sample", {v1: 100})
    routers, prom = router_source(fleet), PrometheusSource(prometheus.url)
    plain = f'sum(conveyor_router_requests_total{{app="sample",release="{v1}"}})'
    seen: list[tuple[int, int, float]] = []  # router source, Prometheus source, plain sum

    def look() -> None:
        r, p = asyncio.run(_both(routers, prom, [v1]))
        answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": plain}).json()
        result = answer["data"]["result"]
        seen.append((r[v1].requests, p[v1].requests, float(result[0]["value"][1]) if result else 0))

    old_pid = router_pid(fleet, "web-1")
    assert old_pid is not None
    with LoadGenerator(fleet.urls(), clients=4, max_seconds=60, rate=40) as load:
        for _ in range(5):
            time.sleep(1.0)
            look()
        before = seen[-1]
        os.kill(old_pid, signal.SIGKILL)  # the agent starts a new one, from zero
        wait_for(lambda: router_pid(fleet, "web-1") not in (None, old_pid), timeout=20)
        fleet.agents["web-1"].wait_routed("sample", {v1: 100})
        for _ in range(6):
            time.sleep(1.0)
            look()
    result = load.result
    answered = result.ok + sum(n for status, n in result.statuses.items() if status >= 500)
    wait_for(lambda: look() or (seen[-1][:2] == seen[-2][:2]), timeout=20, interval=1.0)
    routed, counted, _ = seen[-1]
    dips = [s[2] for s in seen if s[2] < before[2]]
    print(
        f"\nrouter on web-1 killed after {before[1]} requests; {answered} answered, "
        f"{len(result.errors)} connection errors during its restart\n"
        f"plain sum: {[int(s[2]) for s in seen]}\n"
        f"prometheus source: {[s[1] for s in seen]}\nrouter source: {[s[0] for s in seen]}"
    )
    assert dips, "the plain sum never went back: the router did not restart from zero?"
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(seen)), seen
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen)), seen
    # both lose only what web-1 counted after their last look at it before the kill
    rate = answered / 12.0
    assert answered - 3 * rate <= counted <= answered, (counted, answered)
    assert answered - 3 * rate <= routed <= answered, (routed, answered)


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
    with LoadGenerator(fleet.urls(), clients=8, max_seconds=120, rate=40) as load:
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
