"""A rolling deploy over a fleet (25% batches) against the same deploy on one host.

One real server, N+1 real agents (each with its embedded router on its own
loopback address 127.0.1.x) and the sample app with two environments, deployed
in this order: `single` (one host) then `fleet` (N hosts, rolling, batch 25%).
Both hold for approval, so each deployment starts with an API call of its own
(`POST /api/runs/RUN/approve`) and nothing else runs while it is measured.
Release A goes everywhere first (warm-up, not measured); then, per measured
release (B, C…), the `single` deployment and the `fleet` deployment are timed
side by side: from their records (started_at → finished_at), from the API call
to the moment the API says they ended, and per batch step. The floor is
batches x the single host's time: what the fleet would take if a whole batch
cost what one host does. Where a batch's time goes is read from the agents'
logs (desired state received, downloaded, unpacked, started, healthy, routed).
Also prints the CPU used by the server, agents, routers and instances (at rest
and during each deployment, beside the whole machine's: the figures are only
as quiet as the machine) and their memory (RSS, PSS) at the end.

    uv run python bench/fleet_rolling.py [--hosts 50] [--batch 25%] [--rounds 2] [--logs DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import KINDS, CpuMeter, memory

from conveyor.agent.procfs import pids_under
from testbed.fleet import AgentProcess, Fleet
from testbed.helpers import ServerProcess, wait_for

ENDED = ("succeeded", "failed", "rolled_back", "cancelled", "superseded")
ENVS = ("single", "fleet")
SUBNET = "127.0.1."  # nothing else on this machine listens there
# what an agent logs on the way from a new desired state to serving it, in order
MILESTONES = (
    ("desired state", "wake"),
    ("downloaded", "download"),
    ("unpacked", "unpack"),
    ("instance started", "start"),
    ("release healthy", "health"),
    ("routing applied", "route"),
)


def environments_yaml(single: str, fleet: list[str], batch: str) -> str:
    return f"""
environments:
  single:
    hosts: [{single}]
    strategy: rolling
    approval: required
  fleet:
    hosts: [{", ".join(fleet)}]
    strategy: rolling
    batch: "{batch}"
    approval: required
"""


def start_agents(server: ServerProcess, agents: list[AgentProcess], group: int = 5) -> float:
    """Start the agents a few at a time, each group online with its routers before the next."""
    started = time.perf_counter()
    for i in range(0, len(agents), group):
        batch = [a.launch() for a in agents[i : i + group]]

        def online(batch: list[AgentProcess] = batch) -> bool:
            # one listing a poll: per-host polls would load the server we measure
            hosts = {h["name"]: h for h in server.get("/api/hosts")}
            for a in batch:
                if a.proc is not None and a.proc.poll() == 2 and not hosts[a.name]["online"]:
                    # a starved server let its enrolment time out (exit 2): try it once more
                    if getattr(a, "relaunched", False):
                        raise SystemExit(f"agent {a.name} could not enrol:\n{a.log()}")
                    a.relaunched = True  # type: ignore[attr-defined]
                    a.launch()
            return all(a._online(hosts[a.name]) for a in batch)

        # a loaded machine starts a Python process slowly: be patient, not flaky
        wait_for(online, timeout=300, interval=0.5)
    return time.perf_counter() - started


def build(fleet: Fleet, label: str, environments: str) -> tuple[int, str]:
    fleet.commit(label, environments)
    server = fleet.server
    run = server.wait_run(server.post("/api/apps/sample/runs", {})["id"], timeout=300)
    if run["state"] != "succeeded":
        raise SystemExit(f"run of {label} did not succeed: {run}")
    return int(run["id"]), str(run["release"])


@dataclass
class Measured:
    """One deployment: its ended record, the wall time from the API call, CPU, poll latencies."""

    record: dict[str, Any]
    wall: float
    cpu: dict[str, float]
    polls: list[float] = field(default_factory=list)  # seconds the API took to answer a poll

    @property
    def duration(self) -> float:
        return float(self.record["duration"])


def deploy(server: ServerProcess, root: Path, run: int, env: str, timeout: float) -> Measured:
    """Approve the run's deployment to `env` once it waits, then poll it until it ends."""

    def held() -> Any:
        found = [
            d
            for d in server.get(f"/api/deployments?app=sample&environment={env}&limit=20")
            if d["run"] == run
        ]
        return found and found[0]["state"] == "waiting" and found[0]

    deployment = wait_for(held, timeout=60, interval=0.1)
    # a busy machine can leave a host's last report stale: start from a settled fleet
    wait_for(lambda: all(h["online"] for h in server.get("/api/hosts")), timeout=300, interval=1)
    polls: list[float] = []
    cpu = CpuMeter(root)
    started = time.perf_counter()
    server.post(f"/api/runs/{run}/approve")

    def ended() -> Any:
        asked = time.perf_counter()
        d = server.get(f"/api/deployments/{deployment['id']}")
        polls.append(time.perf_counter() - asked)
        return d if d["state"] in ENDED else None

    done = wait_for(ended, timeout=timeout, interval=0.1)
    measured = Measured(done, time.perf_counter() - started, cpu.stop(), polls)
    if done["state"] != "succeeded":
        failed = [f"{s['name']}: {s['reason']}" for s in done["steps"] if s["reason"]]
        raise SystemExit(
            f"deployment {done['id']} to {env} {done['state']}: {done['reason']}\n"
            + "\n".join(failed)
        )
    return measured


def stamp(text: str) -> float:
    """A timestamp of the API or of a log line (ISO; naive is UTC), in epoch seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def agent_events(agent: AgentProcess) -> list[dict[str, Any]]:
    events = []
    for line in agent.log().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "ts" in entry:
                entry["at"] = stamp(entry["ts"])
                events.append(entry)
    return events


def host_phases(
    events: list[dict[str, Any]], release: str, since: float, until: float
) -> dict[str, float] | None:
    """Seconds spent in each phase by one host during one step, from its agent's log."""
    marks: dict[str, float] = {}
    for entry in events:
        if not since <= entry["at"] <= until + 1:
            continue
        msg = entry.get("msg")
        about = entry.get("release") or entry.get("weights", {})
        if msg == "desired state" and "wake" not in marks:
            marks["wake"] = entry["at"]
        elif msg == "downloaded" and release in str(entry.get("dest", "")):
            marks.setdefault("download", entry["at"])
        elif msg == "routing applied" and release in about:
            marks.setdefault("route", entry["at"])
        else:
            for name, phase in MILESTONES[2:5]:
                if msg == name and about == release:
                    marks.setdefault(phase, entry["at"])
    if "route" not in marks:
        return None
    phases, previous = {}, since
    for _, phase in MILESTONES:
        if phase in marks:
            phases[phase] = marks[phase] - previous
            previous = marks[phase]
    phases["routed"] = marks["route"] - since  # from the step's start
    return phases


def batch_figures(
    deployment: dict[str, Any], agents: dict[str, AgentProcess]
) -> tuple[list[float], list[float], list[dict[str, float]], list[float]]:
    """Batch step durations, gaps around steps, per-host phases, last routed → step end."""
    steps = deployment["steps"]
    batches = [s for s in steps if s["kind"] == "batch"]
    durations = [float(s["duration"]) for s in batches]
    # from the deployment's start to its first step, between steps, from the last to its end
    marks = [stamp(deployment["started_at"])]
    for s in steps:
        marks += [stamp(s["started_at"]), stamp(s["finished_at"])]
    marks.append(stamp(deployment["finished_at"]))
    gaps = [marks[i + 1] - marks[i] for i in range(0, len(marks), 2)]
    phases, confirm = [], []
    for step in batches:
        since, until = stamp(step["started_at"]), stamp(step["finished_at"])
        routed = []
        for host in step["hosts"]:
            found = host_phases(agent_events(agents[host]), deployment["release"], since, until)
            if found is not None:
                phases.append(found)
                routed.append(since + found["routed"])
        if routed:
            confirm.append(until - max(routed))
    return durations, gaps, phases, confirm


def teardown(server: ServerProcess, agents: list[AgentProcess], root: Path) -> None:
    """Agents, then the server, then whatever still runs from the temp dir (routers, instances)."""
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.terminate()
    for agent in agents:
        with contextlib.suppress(Exception):
            agent.stop()
    with contextlib.suppress(Exception):
        server.stop()
    server.http.close()
    for _ in range(50):
        left = pids_under(str(root))
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    print(f"warning: processes left running under {root}: {pids_under(str(root))}")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50, help="hosts of the fleet (default 50)")
    parser.add_argument("--batch", default="25%", help='rolling batch: "25%%" or a count')
    parser.add_argument("--rounds", type=int, default=2, help="measured releases (default 2)")
    parser.add_argument(
        "--idle", type=float, default=10, help="seconds the fleet is watched at rest"
    )
    parser.add_argument("--logs", type=Path, help="copy the server's and agents' logs here")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 250:
        sys.exit("--hosts must be between 1 and 250 (one 127.0.1.x address each, plus one)")
    # a SIGTERM tears the fleet down like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    single = "single-1"
    hosts = {single: f"{SUBNET}1"} | {
        f"fleet-{i}": f"{SUBNET}{i + 1}" for i in range(1, args.hosts + 1)
    }
    fleet_hosts = [h for h in hosts if h != single]
    environments = environments_yaml(single, fleet_hosts, args.batch)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(
        prefix="conveyor-bench-fleet-", ignore_cleanup_errors=True
    ) as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "data")
        # on a busy machine the server may answer late: a benchmark waits, it does not fail
        server.http.timeout = httpx.Timeout(120)
        agents: list[AgentProcess] = []
        try:
            server.start()
            fleet = Fleet(server, root, hosts)
            agents = list(fleet.agents.values())
            boot = start_agents(server, agents)
            print(f"{len(agents)} agents with their routers online in {boot:.1f} s", flush=True)
            rounds: list[dict[str, Measured]] = []
            idle: dict[str, float] = {}
            for label in [chr(ord("A") + i) for i in range(args.rounds + 1)]:
                run, release = build(fleet, label, environments)
                one = deploy(server, root, run, "single", timeout=300)
                many = deploy(server, root, run, "fleet", timeout=300 + 30 * args.hosts)
                print(
                    f"release {label} ({release}): single {one.duration:.2f} s, "
                    f"fleet {many.duration:.2f} s"
                    + ("  (warm-up, not measured)" if label == "A" else ""),
                    flush=True,
                )
                if label != "A":
                    rounds.append({"single": one, "fleet": many})
                    continue
                time.sleep(5)  # let the warm-up settle, then watch the fleet at rest
                meter = CpuMeter(root)
                time.sleep(args.idle)
                idle = meter.stop()
            mem = memory(root)
            report(args, rounds, fleet.agents, mem, idle, load)
        finally:
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in root.glob("*.log"):
                    shutil.copy(log, args.logs / log.name)
            teardown(server, agents, root)


def report(
    args: argparse.Namespace,
    rounds: list[dict[str, Measured]],
    agents: dict[str, AgentProcess],
    mem: dict[str, tuple[int, int, int]],
    idle: dict[str, float],
    load_before: tuple[float, float, float],
) -> None:
    steps = rounds[0]["fleet"].record["steps"]
    sizes = [len(s["hosts"]) for s in steps if s["kind"] == "batch"]
    n_batches = len(sizes)
    print()
    print(
        f"hosts {args.hosts}, batch {args.batch} -> {sizes[0]} host(s) a batch, "
        f"{n_batches} batches ({'+'.join(map(str, sizes))}); load average before start "
        f"{load_before[0]:.1f} on {os.cpu_count()} cores (shared machine: other test suites "
        "may run)"
    )
    header = (
        f"{'release':<8}{'single':>9}{'fleet':>9}{'ratio':>7}{'batch med':>11}"
        f"{'floor':>9}{'fleet/floor':>13}{'single wall':>13}{'fleet wall':>12}{'wall ratio':>12}"
    )
    print(header)
    print("-" * len(header))
    seen: dict[str, dict[str, list[float]]] = {env: defaultdict(list) for env in ENVS}
    phases: dict[str, list[dict[str, float]]] = {env: [] for env in ENVS}
    rows = []
    for label, r in zip("BCDEFGHIJKLMNOPQRSTUVWXYZ", rounds, strict=False):
        for env in ENVS:
            batches, gaps, host, confirm = batch_figures(r[env].record, agents)
            seen[env]["batches"] += batches
            seen[env]["outside"].append(sum(gaps))
            seen[env]["gaps"] += gaps
            seen[env]["confirm"] += confirm
            seen[env]["polls"] += r[env].polls
            seen[env]["verify"] += [
                float(s["duration"]) for s in r[env].record["steps"] if s["kind"] == "verify"
            ]
            phases[env] += host
        one, many = r["single"], r["fleet"]
        floor = n_batches * one.duration
        row = (
            one.duration,
            many.duration,
            many.duration / one.duration,
            med(seen["fleet"]["batches"][-n_batches:]),
            floor,
            many.duration / floor,
            one.wall,
            many.wall,
            many.wall / one.wall,
        )
        rows.append(row)
        print(_row(label, row))
    if len(rows) > 1:
        print(_row("median", tuple(med([row[i] for row in rows]) for i in range(len(rows[0])))))
    print(
        "(single, fleet: deployment record started_at -> finished_at, s; wall: from the "
        "approve API call until the API reports the end, s; floor: batches x single)"
    )
    print()
    many_seen, one_seen = seen["fleet"], seen["single"]
    batch, single_batch = med(many_seen["batches"]), med(one_seen["batches"])
    print(
        f"batch steps: fleet median {batch:.2f} s (min {min(many_seen['batches']):.2f}, "
        f"max {max(many_seen['batches']):.2f}, over {len(many_seen['batches'])}) against "
        f"{single_batch:.2f} s for the single host: a batch of {sizes[0]} costs "
        f"{batch / single_batch:.1f}x one host"
    )
    print(
        "outside batch steps (start -> first step, between steps, verify, last -> end): "
        f"single {med(one_seen['outside']):.2f} s, fleet {med(many_seen['outside']):.2f} s "
        f"+ verify {med(many_seen['verify']):.2f} s "
        f"({len(many_seen['gaps']) // len(rounds)} gaps, median "
        f"{med(many_seen['gaps']) * 1000:.0f} ms; the engine ticks every 250 ms)"
    )
    names = [p for _, p in MILESTONES] + ["routed"]
    print(
        "where a host's time goes in a batch step (median s; each phase from the previous "
        "mark, 'routed' from the step's start, 'confirm' from the batch's last host routed "
        "to the step's end: agent report + engine tick):"
    )
    print(f"{'':<14}" + "".join(f"{n:>10}" for n in [*names, "confirm"]))
    for env in ENVS:
        cells = [med([p[n] for p in phases[env] if n in p]) for n in names]
        cells.append(med(seen[env]["confirm"]))
        print(f"{env + ' host(s)':<14}" + "".join(f"{c:>10.2f}" for c in cells))
    health = [p["health"] for p in phases["fleet"] if "health" in p]
    print(
        f"  {sum(1 for h in health if h > 0.5)}/{len(health)} fleet hosts needed a second "
        "health check (interval 1 s: healthy > 0.5 s after the instance started)"
    )
    polls = {env: sorted(seen[env]["polls"]) for env in ENVS}
    print(
        "the API answered this benchmark's polls (GET /api/deployments/ID) in median "
        + ", ".join(
            f"{med(polls[env]) * 1000:.0f} ms (p90 {_p90(polls[env]) * 1000:.0f}) during {env}"
            for env in ENVS
        )
    )
    print()
    print(
        f"CPU, in cores used on average ({os.cpu_count()} on this machine; 'machine' "
        "counts every process, other users' included):"
    )
    print(f"{'':<22}" + "".join(f"{k:>10}" for k in (*KINDS, "conveyor", "machine")))
    spans = [("fleet at rest", [idle])] + [
        (f"{env} deployment", [r[env].cpu for r in rounds]) for env in ENVS
    ]
    for label, samples in spans:
        cells = [med([c.get(k, 0.0) for c in samples]) for k in KINDS]
        cells.append(med([sum(c.get(k, 0.0) for k in KINDS) for c in samples]))
        cells.append(med([c["machine"] for c in samples]))
        print(f"{label:<22}" + "".join(f"{c:>10.2f}" for c in cells))
    print()
    print("memory at the end (each fleet host keeps its previous release warm, keep_warm 10m):")
    total_rss = total_pss = 0
    for kind in KINDS:
        count, rss, pss = mem.get(kind, (0, 0, 0))
        total_rss += rss
        total_pss += pss
        each = f", {rss / count / 1024:.0f} MiB each" if count else ""
        print(
            f"  {kind:<10} {count:>4} process(es)  RSS {rss / 1024:8.0f} MiB{each}  "
            f"PSS {pss / 1024:8.0f} MiB"
        )
    host_rss = sum(mem.get(k, (0, 0, 0))[1] for k in KINDS[1:])
    print(
        f"  total RSS {total_rss / 1024:.0f} MiB (PSS {total_pss / 1024:.0f} MiB); "
        f"agents+routers+instances {host_rss / 1024:.0f} MiB, "
        f"{host_rss / 1024 / len(agents):.0f} MiB per host"
    )


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))] if values else float("nan")


def _row(label: str, row: tuple[float, ...]) -> str:
    one, many, ratio, batch, floor, over, one_wall, many_wall, wall_ratio = row
    return (
        f"{label:<8}{one:>9.2f}{many:>9.2f}{ratio:>6.1f}x{batch:>11.2f}"
        f"{floor:>9.2f}{over:>12.2f}x{one_wall:>13.2f}{many_wall:>12.2f}{wall_ratio:>11.1f}x"
    )


if __name__ == "__main__":
    main()
