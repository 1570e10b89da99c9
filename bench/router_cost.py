"""Router cost: requests/s and p50/p99 latency direct to an instance, through HAProxy and
through the embedded router, with the same load tool (wrk) in the same run.

    uv run python bench/router_cost.py [--seconds 5] [--connections 16 50] [--rounds 3]
        [--workers 1 2] [--rate 4000]

wrk is closed-loop: each connection sends its next request as soon as the last is
answered, so the load saturates the target and its p99 is the queue behind a core's worth
of requests (it follows CPU per request). `--rate R` adds, in each round, hey (Debian's
`hey`) at a fixed R requests a second over 16 keep-alive connections (R/16 each) against
every target: below saturation, the latency a router adds to a request.

Beside wrk's figures, the CPU each target's processes spent per request during its run
(/proc: user + system), which the machine's other load does not inflate the way it does
p99. Each round runs wrk against every target in turn (the order turned each round), so that
a busy machine weighs on all of them alike; the figures are medians over the rounds with
each round's value beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor.agent.procfs import pids_under
from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.spec import Router, RouteSpec, Target
from testbed.backend import Backend
from testbed.helpers import free_port, wait_for

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU these processes used so far (those gone meanwhile count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


def wrk(
    url: str,
    seconds: int,
    connections: int,
    headers: list[str] | None = None,
    pids: list[int] | None = None,
) -> dict[str, float]:
    """wrk's figures; with `pids`, also the CPU microseconds those processes spent per
    request meanwhile (what a router costs, whatever else the machine runs)."""
    extra = [arg for header in headers or [] for arg in ("-H", header)]
    before = cpu_seconds(pids or [])
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spent = cpu_seconds(pids or []) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    total = re.search(r"(\d+) requests in", out)
    requests = int(total.group(1)) if total else 0
    return {
        "rps": rps,
        "cpu_us": spent * 1e6 / requests if requests else 0.0,
        "p50": lat["50"],
        "p99": lat["99"],
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def hey(url: str, seconds: int, rate: int, connections: int = 16) -> dict[str, float]:
    """hey at a fixed `rate` requests a second over `connections` keep-alive connections:
    p50/p99 in ms from every request's own time (its CSV, 0.1 ms resolution)."""
    out = subprocess.run(
        [
            *("hey", "-z", f"{seconds}s", "-c", str(connections)),
            *("-q", f"{rate / connections:g}", "-o", "csv", url),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    times, bad = [], 0
    for line in out.splitlines()[1:]:
        fields = line.split(",")
        if len(fields) < 7:
            continue
        times.append(float(fields[0]) * 1000)
        bad += fields[6] != "200"
    times.sort()
    assert times, out[:500]
    return {
        "rps": len(times) / seconds,
        "p50": times[len(times) // 2],
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
        "non2xx": float(bad),
    }


async def through(router: Router, backend_port: int) -> int:
    await router.start()
    port = free_port()
    await router.apply(
        RouteSpec(
            app="bench",
            port=port,
            bind="127.0.0.1",
            targets=[Target(release="r1", port=backend_port, weight=100)],
        )
    )
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200, timeout=10)
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[16, 50], help="wrk connections"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="embedded router worker counts, each its own router (0 = one per core)",
    )
    parser.add_argument(
        "--rate", type=int, default=0, help="also hey at this fixed req/s over 16 connections"
    )
    args = parser.parse_args()
    if args.rate and not shutil.which("hey"):
        sys.exit("--rate needs hey: apt-get install hey")
    if not shutil.which("wrk") or not shutil.which("haproxy"):
        sys.exit("wrk and haproxy are needed: run scripts/setup.sh")
    backend = Backend("r1", "bench").spawn().wait_ready()
    backend_port = backend.port
    # name -> round -> connections -> wrk figures
    runs: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
    fixed: dict[str, list[dict[str, float]]] = {}  # name -> hey's figures, per round
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-router-cost-") as tmp:
        root = Path(tmp)
        embedded = {
            n: EmbeddedRouter(root / f"router{n}.sock", root / f"router{n}.log", workers=n)
            for n in args.workers
        }
        haproxy = HAProxyRouter(root / "haproxy")
        try:
            wait_for(lambda: _up(backend_port), timeout=10)
            ports = {"direct": backend_port, "haproxy": asyncio.run(through(haproxy, backend_port))}
            for n, router in embedded.items():
                ports[f"embedded/{n}w"] = asyncio.run(through(router, backend_port))
            names = list(ports)
            # the processes of each target, for its CPU per request
            owners = {
                "direct": [backend.proc.pid] if backend.proc else [],
                "haproxy": pids_under(str(root / "haproxy")),
                **{f"embedded/{n}w": pids_under(str(root / f"router{n}.sock")) for n in embedded},
            }
            for rnd in range(args.rounds):
                loads.append("/".join(f"{v:.1f}" for v in os.getloadavg()))
                # Interleaved: every router in every round, the order turned each round.
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for connections in args.connections:
                    for name in order:
                        url = f"http://127.0.0.1:{ports[name]}/"
                        wrk(url, 1, connections)  # warm up
                        figures = wrk(url, args.seconds, connections, pids=owners[name])
                        runs.setdefault(name, {}).setdefault(rnd, {})[connections] = figures
                        time.sleep(0.3)
                for name in order if args.rate else []:
                    url = f"http://127.0.0.1:{ports[name]}/"
                    hey(url, 1, args.rate)  # warm up
                    fixed.setdefault(name, []).append(hey(url, args.seconds, args.rate))
                    time.sleep(0.3)
        finally:
            for router in embedded.values():
                asyncio.run(router.stop())
            asyncio.run(haproxy.stop())
            backend.stop()
    report(runs, args.connections, args.rounds, args.seconds, loads)
    if fixed:
        report_fixed(fixed, args.rate, args.seconds)


def report_fixed(fixed: dict[str, list[dict[str, float]]], rate: int, seconds: int) -> None:
    print(
        f"\nfixed rate (hey -z {seconds}s -c 16 -q {rate / 16:g}: {rate} req/s): median p50, "
        "p99 ms (per round)"
    )
    for name, rounds in fixed.items():
        p50 = [f["p50"] for f in rounds]
        p99 = [f["p99"] for f in rounds]
        bad = sum(int(f["non2xx"]) for f in rounds)
        print(
            f"  {name:13} {statistics.median([f['rps'] for f in rounds]):8.0f} req/s   "
            f"p50 {statistics.median(p50):5.2f}   p99 {statistics.median(p99):5.2f} ms "
            f"[{', '.join(f'{v:.2f}' for v in p99)}]   non-2xx {bad}"
        )
    for name, rounds in fixed.items():
        if name == "direct":
            continue
        added = [f["p99"] - d["p99"] for f, d in zip(rounds, fixed["direct"], strict=True)]
        print(f"  {name} added p99 over direct: {_median_spread(added)} ms (goal < 1 ms)")


def _median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(
    runs: dict[str, dict[int, dict[int, dict[str, float]]]],
    connections_list: list[int],
    rounds: int,
    seconds: int,
    loads: list[str],
) -> None:
    print(f"wrk -t1 -d{seconds}s, same backend (uvloop+httptools), {rounds} interleaved rounds")
    print("load average (1, 5, 15 min) at the start of each round: " + "; ".join(loads))
    for connections in connections_list:
        print(f"\n{connections} connections: median req/s, p99 ms (per round)")
        for name, by_round in runs.items():
            rps = [by_round[r][connections]["rps"] for r in range(rounds)]
            p99 = [by_round[r][connections]["p99"] for r in range(rounds)]
            bad = sum(by_round[r][connections]["non2xx"] for r in range(rounds))
            cpu = [by_round[r][connections]["cpu_us"] for r in range(rounds)]
            cpus = ", ".join(f"{v:.1f}" for v in cpu)
            print(
                f"  {name:13} {statistics.median(rps):8.0f} req/s "
                f"[{', '.join(f'{v:.0f}' for v in rps)}]   "
                f"p99 {statistics.median(p99):6.2f} ms [{', '.join(f'{v:.2f}' for v in p99)}]"
                f"   CPU {statistics.median(cpu):5.1f} us/req [{cpus}]"
                f"   non-2xx {int(bad)}"
            )
        for name, by_round in runs.items():
            if not name.startswith("embedded"):
                continue
            ratios = [
                by_round[r][connections]["rps"] / runs["haproxy"][r][connections]["rps"]
                for r in range(rounds)
            ]
            added = [
                by_round[r][connections]["p99"] - runs["direct"][r][connections]["p99"]
                for r in range(rounds)
            ]
            print(
                f"  {name} / haproxy req/s: {_median_spread(ratios)}x (goal >= 0.8x at 50)"
                f"   added p99 over direct: {_median_spread(added)} ms (goal < 1 ms at 16)"
            )


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
