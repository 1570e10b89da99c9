"""Router cost of flags: requests/s and p99 through the embedded router with 20 flags
evaluated per request (X-Conveyor-Flags) against the same router with none.

    uv run python bench/flags_router.py [--seconds 5] [--connections 16] [--rounds 3]
        [--flags 20] [--users 100000] [--router embedded|haproxy] [--pause MS]

wrk sends each request with a `uid` cookie drawn from --users distinct ids. The embedded
router evaluates each request (in C, flags/_line.c, when the package was built with it;
else in Python, keeping the answers of 65,536 users); HAProxy keeps each thread's users'
answers (conveyor_flags.lua): fewer users measure the kept answers, more the evaluation.
With --pause, each connection waits MS ms after each answer before its next request (wrk's
`delay()`): below what the router can serve, p99 is a request's latency rather than the
queue's. Rounds alternate the two routers; the figures are medians over the rounds, with
the spread of each round's own ratio. With --router haproxy, the same through HAProxy.

wrk, the router and the stand-in app share the machine's cores, so requests/s also pays
for the app reading a longer request (the header's answers); the CPU each spent per
request during the runs (/proc: user + system) tells the router's part from the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_cost import cpu_seconds

from conveyor.agent.procfs import pids_under
from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.spec import Router, RouteSpec, Target
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.protocol.desired import HostFlags
from conveyor.protocol.flags import FlagState
from testbed.backend import Backend
from testbed.helpers import free_port, wait_for

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
SCRIPT = """
request = function()
  return wrk.format(nil, nil, {{["Cookie"] = "uid=user-" .. math.random({users})}})
end
"""


def wrk(
    url: str,
    seconds: int,
    connections: int,
    script: Path,
    pids: tuple[list[int], list[int]],
    pin: bool,
) -> tuple[float, float, float, float]:
    """req/s, p99 ms, and the CPU µs per request of the router's and of the app's processes."""
    before = cpu_seconds(pids[0]), cpu_seconds(pids[1])
    if pin:  # the router on core 0 alone; the app and wrk on core 1
        for pid in pids[0]:
            os.sched_setaffinity(pid, {0})
        for pid in pids[1]:
            os.sched_setaffinity(pid, {1})
    out = subprocess.run(
        [
            *(["taskset", "-c", "1"] if pin else []),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    router, app = (cpu_seconds(p) - b for p, b in zip(pids, before, strict=True))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    total = re.search(r"(\d+) requests in", out)
    assert m and total, out
    n = int(total.group(1))
    return rps, float(m.group(1)) * UNITS[m.group(2)], router * 1e6 / n, app * 1e6 / n


def flags(count: int) -> HostFlags:
    """`count` flags as a rollout might leave them: half with variants, some constrained."""
    named = []
    for i in range(count):
        state: dict[str, object] = {"enabled": i % 5 != 0, "rollout": 10 + (i * 17) % 90}
        if i % 2:
            state["variants"] = [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]
        if i % 4 == 3:
            state["user_ids"] = ["user-1", "user-2"]
        named.append(NamedFlag(f"flag-{i}", "", FlagState.model_validate(state)))
    return HostFlags(stickiness="cookie:uid", document=to_document(named))


async def through(router: Router, backend_port: int, host_flags: HostFlags | None) -> int:
    await router.start()
    port = free_port()
    await router.apply(
        RouteSpec(
            app="bench",
            port=port,
            bind="127.0.0.1",
            targets=[Target(release="r1", port=backend_port, weight=100)],
            flags=host_flags,
        )
    )
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200, timeout=10)
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flags", type=int, default=20)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument(
        "--pause", type=float, default=0, help="ms each connection waits after each answer"
    )
    parser.add_argument("--router", choices=["embedded", "haproxy"], default="embedded")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place the router, the app and wrk (default: the router on "
        "core 0 alone, the app and wrk on core 1, so the router's cost sets requests/s)",
    )
    args = parser.parse_args()
    backend = Backend("r1", "bench").spawn().wait_ready()
    seen: dict[str, list[tuple[float, float, float, float]]] = {
        "none": [],
        f"{args.flags} flags": [],
    }
    loads = []
    with tempfile.TemporaryDirectory(prefix="conveyor-flags-bench-") as tmp:
        root = Path(tmp)
        script = root / "users.lua"
        paced = f"\ndelay = function()\n  return {args.pause}\nend\n" if args.pause else ""
        script.write_text(SCRIPT.format(users=args.users) + paced)
        routers: dict[str, Router] = {
            name: (
                HAProxyRouter(root / f"haproxy-{i}")
                if args.router == "haproxy"
                else EmbeddedRouter(root / f"{i}.sock", root / f"{i}.log", workers=1)
            )
            for i, name in enumerate(seen)
        }
        try:
            ports = {
                name: asyncio.run(
                    through(router, backend.port, None if name == "none" else flags(args.flags))
                )
                for name, router in routers.items()
            }
            names = list(ports)
            app = [backend.proc.pid] if backend.proc else []
            owners = {
                name: (
                    pids_under(str(root / f"haproxy-{i}"))
                    if args.router == "haproxy"
                    else pids_under(str(root / f"{i}.sock")),
                    app,
                )
                for i, name in enumerate(names)
            }
            for rnd in range(args.rounds):
                loads.append("/".join(f"{v:.1f}" for v in os.getloadavg()))
                for name in names[rnd % 2 :] + names[: rnd % 2]:
                    url = f"http://127.0.0.1:{ports[name]}/"
                    wrk(url, 1, args.connections, script, owners[name], args.pin)  # warm up
                    seen[name].append(
                        wrk(url, args.seconds, args.connections, script, owners[name], args.pin)
                    )
                    time.sleep(0.3)
        finally:
            for router in routers.values():
                asyncio.run(router.stop())
            backend.stop()
    print(
        f"{args.router} router{', pinned to core 0 (app and wrk: core 1)' if args.pin else ''}; "
        f"wrk -t1 -c{args.connections} -d{args.seconds}s"
        f"{f', {args.pause} ms between requests' if args.pause else ''}, "
        f"{args.users} distinct users, "
        f"{args.rounds} alternating rounds; load average: {'; '.join(loads)}"
    )
    for name, figures in seen.items():
        rps = statistics.median(f[0] for f in figures)
        p99 = statistics.median(f[1] for f in figures)
        router = statistics.median(f[2] for f in figures)
        app = statistics.median(f[3] for f in figures)
        print(
            f"  {name:10} {rps:8.0f} req/s   p99 {p99:6.2f} ms   CPU per request: router "
            f"{router:5.1f} us, app {app:5.1f} us"
        )
    (none_rps, none_p99, none_router, none_app), (flag_rps, flag_p99, flag_router, flag_app) = (
        tuple(statistics.median(f[i] for f in v) for i in range(4)) for v in seen.values()
    )
    none, flagged = seen.values()
    # each round's own ratio (its two runs back to back): the spread of the medians above
    rounds = [[f[i] / n[i] for n, f in zip(none, flagged, strict=True)] for i in range(2)]
    print(
        f"  with flags / none: req/s {flag_rps / none_rps:.3f}x "
        f"(rounds {min(rounds[0]):.3f}-{max(rounds[0]):.3f}), p99 {flag_p99 / none_p99:.3f}x "
        f"(rounds {min(rounds[1]):.3f}-{max(rounds[1]):.3f}) (goal: within 5%); "
        f"CPU per request: router {flag_router / none_router:.3f}x, app {flag_app / none_app:.3f}x"
    )


if __name__ == "__main__":
    main()
