"""Zero loss and warm rollback time on one host, for each router backend.

A load generator (>= 16 keep-alive clients) runs against the host's router while
a deploy, a warm rollback, a cold rollback and two failed deploys (crash on
start, never healthy) go through the real server and agent. Prints requests
sent, connection errors, 5xx and which release answered; then times warm
rollbacks (command -> every new request on the previous release).

    uv run python bench/zero_loss.py [--router embedded|haproxy|both] [--min-requests 50000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor.demo.sample import sample_config, write_sample_app
from testbed.fleet import AgentProcess, LoadGenerator, LoadResult
from testbed.helpers import ServerProcess, commit, free_port, wait_for

ADDRESS = "127.0.0.2"


def build(server: ServerProcess, repo: Path, port: int, label: str, **config: object) -> str:
    commit(
        repo,
        {
            "conveyor.yml": sample_config("sample", port=port, **config),  # type: ignore[arg-type]
            "VERSION": label,
        },
    )
    with server.api() as api:
        started = api.start_run("sample", None)
        run = wait_for(
            lambda: (r := api.run(started.id)).state not in ("queued", "running") and r,
            timeout=120,
            interval=0.2,
        )
    assert run.state == "succeeded" and run.release is not None, run
    return run.release


def warm_rollback_ms(agent: AgentProcess, url: str, to: str, away: str) -> float:
    """From the command to the first of 50 consecutive answers from `to`."""
    with httpx.Client(timeout=5) as client:
        started = time.perf_counter()
        agent.set("sample", {to: 100})
        streak, streak_start = 0, 0.0
        while streak < 50:
            t = time.perf_counter()
            release = client.get(url).json()["release"]
            if release == to:
                if streak == 0:
                    streak_start = t
                streak += 1
            else:
                streak = 0
        elapsed = (streak_start - started) * 1000
    agent.set("sample", {away: 100})
    agent.wait_routed("sample", {away: 100})
    return elapsed


def scenario(router: str, min_requests: int, rollbacks: int) -> tuple[LoadResult, list[float]]:
    with tempfile.TemporaryDirectory(prefix=f"conveyor-bench-{router}-") as tmp:
        root = Path(tmp)
        server = ServerProcess(root / "data").start()
        port = free_port(ADDRESS)
        repo = root / "sample"
        write_sample_app(repo, "sample", port=port)
        with server.api() as api:
            api.add_app({"name": "sample", "repo": str(repo)})
        agent = AgentProcess(server, "web-1", root / "agent", address=ADDRESS, router=router)
        url = f"http://{ADDRESS}:{port}/"
        try:
            v1 = build(server, repo, port, "v1")
            v2 = build(server, repo, port, "v2")
            v3 = build(server, repo, port, "v3", keep_warm="0s")
            crash = build(server, repo, port, "crash", start="exit 3")
            sick = build(server, repo, port, "sick", health_status=500, health_timeout="3s")
            agent.start()
            agent.set("sample", {v1: 100})
            agent.wait_routed("sample", {v1: 100})
            with LoadGenerator(url, clients=16, max_seconds=600) as load:
                rounds = 0
                while load.result.sent < min_requests or rounds == 0:
                    rounds += 1
                    for weights in (
                        {v2: 100},  # deploy
                        {v1: 100},  # warm rollback
                        {v3: 100},  # deploy, v1 goes cold (v3 keeps nothing warm)
                    ):
                        agent.set("sample", weights)
                        agent.wait_routed("sample", weights)
                    wait_for(lambda: agent.release("sample", v1) is None, timeout=60)
                    agent.set("sample", {v1: 100})  # cold rollback
                    agent.wait_routed("sample", {v1: 100})
                    for bad in (crash, sick):  # failed deploys
                        agent.set("sample", {bad: 100})
                        wait_for(
                            lambda b=bad: (
                                (agent.release("sample", b) or {}).get("phase") == "failed"
                            ),
                            timeout=60,
                        )
                result = load.stop()
            # warm rollback timing, without load
            agent.set("sample", {v2: 100})
            agent.wait_routed("sample", {v2: 100})
            times = [
                warm_rollback_ms(agent, url, v1 if i % 2 == 0 else v2, v2 if i % 2 == 0 else v1)
                for i in range(rollbacks)
            ]
            return result, times
        finally:
            agent.stop_everything()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", choices=["embedded", "haproxy", "both"], default="both")
    parser.add_argument("--min-requests", type=int, default=50_000)
    parser.add_argument("--rollbacks", type=int, default=10)
    args = parser.parse_args()
    routers = ["embedded", "haproxy"] if args.router == "both" else [args.router]
    if "haproxy" in routers and shutil.which("haproxy") is None:
        sys.exit("haproxy is not installed: run scripts/setup.sh")
    for router in routers:
        started = time.perf_counter()
        result, times = scenario(router, args.min_requests, args.rollbacks)
        took = time.perf_counter() - started
        errors = len(result.errors)
        five = sum(n for s, n in result.statuses.items() if s >= 500)
        print(
            f"[{router}] requests sent {result.sent}, connection errors {errors}, 5xx {five} "
            f"({took:.0f}s)"
        )
        print(f"[{router}] answered by release: {dict(result.releases)}")
        if result.errors:
            print(f"[{router}] first errors: {result.errors[:3]}")
        print(
            f"[{router}] warm rollback, command -> 100% on previous release: median "
            f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms over {len(times)}"
        )


if __name__ == "__main__":
    main()
