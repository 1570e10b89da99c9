"""Router cost: requests/s and p50/p99 latency direct to an instance, through HAProxy and
through the embedded router, with the same load tool (wrk) in the same run.

    uv run python bench/router_cost.py [--seconds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.spec import Router, RouteSpec, Target
from testbed.backend import Backend
from testbed.helpers import free_port, wait_for

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
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
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("haproxy"):
        sys.exit("wrk and haproxy are needed: run scripts/setup.sh")
    backend = Backend("r1", "bench").spawn().wait_ready()
    backend_port = backend.port
    with tempfile.TemporaryDirectory(prefix="conveyor-router-cost-") as tmp:
        root = Path(tmp)
        embedded = EmbeddedRouter(root / "router.sock", root / "router.log")
        haproxy = HAProxyRouter(root / "haproxy")
        try:
            wait_for(lambda: _up(backend_port), timeout=10)
            e_port = asyncio.run(through(embedded, backend_port))
            h_port = asyncio.run(through(haproxy, backend_port))
            results: dict[int, dict[str, dict[str, float]]] = {}
            for connections in (args.connections, 1):
                results[connections] = {}
                for name, port in (
                    ("direct", backend_port),
                    ("haproxy", h_port),
                    ("embedded", e_port),
                ):
                    url = f"http://127.0.0.1:{port}/"
                    wrk(url, 1, connections)  # warm up
                    results[connections][name] = wrk(url, args.seconds, connections)
                    time.sleep(0.5)
        finally:
            asyncio.run(embedded.stop())
            asyncio.run(haproxy.stop())
            backend.stop()
    for connections, by_name in results.items():
        print(f"wrk -t1 -c{connections} -d{args.seconds}s, same backend (uvloop+httptools):")
        for name, r in by_name.items():
            print(
                f"  {name:9} {r['rps']:9.0f} req/s   p50 {r['p50']:6.2f} ms   "
                f"p99 {r['p99']:6.2f} ms   non-2xx {int(r['non2xx'])}"
            )
        e, h, d = by_name["embedded"], by_name["haproxy"], by_name["direct"]
        print(f"  embedded / haproxy requests/s: {e['rps'] / h['rps']:.2f}x   (goal >= 0.6x)")
        print(
            f"  added p99 over direct: embedded {e['p99'] - d['p99']:+.2f} ms, "
            f"haproxy {h['p99'] - d['p99']:+.2f} ms   (goal < 1 ms)"
        )


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
