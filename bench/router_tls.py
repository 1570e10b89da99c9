"""TLS through the routers: HTTPS requests/s and p50/p99 latency on keep-alive
connections, and TLS handshakes/s (a new connection per request), through HAProxy and
the embedded router, beside plain HTTP straight to the instance, in the same wrk run.

    uv run python bench/router_tls.py [--seconds 5] [--connections 16 50] [--rounds 3]
        [--workers 1 2]

Each router serves one app by its name on its shared HTTPS port with a trustme
certificate (ECDSA P-256), as `tls:` makes it; wrk (`-t1`) sends that name as Host.
Rounds are interleaved (every target each round, the order turned), figures are medians
with each round's value beside them; "added p99" is over plain HTTP straight to the
instance in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_cost import wrk

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.haproxy import HAProxyRouter
from conveyor.agent.routing.spec import Router, RouteSpec, Target, TlsRoute
from conveyor.certs import served_pem
from testbed.backend import Backend
from testbed.helpers import free_port, wait_for

NAME = "bench.example.com"


async def through(router: Router, backend_port: int, pem: Path) -> int:
    await router.start()
    http_port, https_port = free_port(), free_port()
    await router.apply(
        RouteSpec(
            app="bench",
            port=http_port,
            bind="127.0.0.1",
            targets=[Target(release="r1", port=backend_port, weight=100)],
            domains=[NAME],
            tls=TlsRoute(port=https_port, pem=str(pem), redirect_http=True),
        )
    )
    return https_port


def _up(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(url, headers=headers, verify=False, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("haproxy"):
        sys.exit("wrk and haproxy are needed: run scripts/setup.sh")
    backend = Backend("r1", "bench").spawn().wait_ready()
    runs: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    loads: list[str] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-router-tls-") as tmp:
        root = Path(tmp)
        leaf = trustme.CA().issue_cert(NAME)
        pem = root / "bench.pem"
        pem.write_bytes(served_pem(leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
        embedded = {
            n: EmbeddedRouter(root / f"router{n}.sock", root / f"router{n}.log", workers=n)
            for n in args.workers
        }
        haproxy = HAProxyRouter(root / "haproxy")
        try:
            urls = {"direct (http)": f"http://127.0.0.1:{backend.port}/"}
            port = asyncio.run(through(haproxy, backend.port, pem))
            urls["haproxy"] = f"https://127.0.0.1:{port}/"
            for n, router in embedded.items():
                port = asyncio.run(through(router, backend.port, pem))
                urls[f"embedded/{n}w"] = f"https://127.0.0.1:{port}/"
            for url in urls.values():
                wait_for(lambda url=url: _up(url, {"Host": NAME}), timeout=15)  # type: ignore[misc]
            names = list(urls)
            for rnd in range(args.rounds):
                loads.append("/".join(f"{v:.1f}" for v in os.getloadavg()))
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    url = urls[name]
                    for connections in args.connections:
                        wrk(url, 1, connections, [f"Host: {NAME}"])  # warm up
                        figures = wrk(url, args.seconds, connections, [f"Host: {NAME}"])
                        runs.setdefault(name, {}).setdefault(rnd, {})[f"{connections}"] = figures
                        time.sleep(0.3)
                    # a new connection (so a full handshake) for every request
                    close = [f"Host: {NAME}", "Connection: close"]
                    figures = wrk(url, args.seconds, 16, close)
                    runs[name][rnd]["handshakes"] = figures
                    time.sleep(0.3)
        finally:
            for router in embedded.values():
                asyncio.run(router.stop())
            asyncio.run(haproxy.stop())
            backend.stop()
    report(runs, [str(c) for c in args.connections], args.rounds, args.seconds, loads)


def _spread(values: list[float], digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} [{', '.join(f'{v:.{digits}f}' for v in values)}]"
    )


def report(
    runs: dict[str, dict[int, dict[str, dict[str, float]]]],
    loads_by: list[str],
    rounds: int,
    seconds: int,
    loads: list[str],
) -> None:
    print(f"wrk -t1 -d{seconds}s, HTTPS by name ({NAME}), {rounds} interleaved rounds")
    print("load average (1, 5, 15 min) at the start of each round: " + "; ".join(loads))
    for key in [*loads_by, "handshakes"]:
        what = (
            "16 connections, Connection: close (one TLS handshake per request)"
            if key == "handshakes"
            else f"{key} keep-alive connections"
        )
        print(f"\n{what}: median req/s, p99 ms [per round]")
        for name, by_round in runs.items():
            if key == "handshakes" and name.startswith("direct"):
                continue
            rps = [by_round[r][key]["rps"] for r in range(rounds)]
            p99 = [by_round[r][key]["p99"] for r in range(rounds)]
            bad = sum(
                by_round[r][key]["non2xx"] + by_round[r][key]["socket_errors"]
                for r in range(rounds)
            )
            print(
                f"  {name:14} {_spread(rps, 0)} req/s   p99 {_spread(p99)} ms   errors {int(bad)}"
            )
        for name, by_round in runs.items():
            if not name.startswith("embedded"):
                continue
            ratios = [
                by_round[r][key]["rps"] / runs["haproxy"][r][key]["rps"] for r in range(rounds)
            ]
            line = f"  {name} / haproxy: {_spread(ratios)}x"
            if key != "handshakes":
                for other in (name, "haproxy"):
                    added = [
                        runs[other][r][key]["p99"] - runs["direct (http)"][r][key]["p99"]
                        for r in range(rounds)
                    ]
                    line += f"   {other} added p99 over direct: {_spread(added)} ms"
            print(line)


if __name__ == "__main__":
    main()
