"""Builds: runs per minute with the server alone, and with two `conveyor runner`s.

One real server (SQLite) on 127.0.71.1 and `--apps` small repositories (a run per
app at a time, so several apps keep several runs going); each run has `--steps` short
test steps and a build step, then its artifact. Round A: the server runs the steps
itself (no runner up, the default). Round B: two runners (connecting from 127.0.71.2
and .3) run them and upload the artifacts; the server only checks out, plans and
records. Each round queues `--runs` runs per app and times them all to the end.

Printed: runs per minute of each, their ratio, and the median time from a run's
creation to its end. On one machine both rounds share the same cores: the ratio tells
the cost of the runner protocol (claim, source archive, log and artifact uploads),
not the capacity a second machine adds.

    uv run python bench/runners.py [--apps 4] [--runs 3] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.helpers import ManagedProcess, ServerProcess, config, make_repo, wait_for

SERVER, RUNNERS = "127.0.71.1", ("127.0.71.2", "127.0.71.3")
ENDED = ("succeeded", "failed", "cancelled", "superseded")


class Runner(ManagedProcess):
    def __init__(self, server: ServerProcess, token: str, name: str, bind: str, tmp: Path) -> None:
        self.args = [sys.executable, "-m", "conveyor", "runner", "--server", server.url]
        self.args += ["--name", name, "--bind", bind, "--work", str(tmp / f"work-{name}")]
        self.env = {**os.environ, "CONVEYOR_TOKEN": token}
        self.log_path = tmp / f"runner-{name}.log"

    def start(self) -> Runner:
        self.spawn(self.args, self.env)
        return self


def repos(tmp: Path, apps: int, steps: int) -> list[tuple[str, Path]]:
    out = []
    for i in range(apps):
        name, repo = f"app-{i}", tmp / f"repo-{i}"
        tests = [f"echo step {n}; ls > /dev/null" for n in range(steps)]
        files = {"conveyor.yml": config(name, tests, ["echo built > BUILT"])}
        files |= {f"src/module_{n}.py": f"VALUE = {n}\n" * 20 for n in range(20)}
        make_repo(repo, files)
        out.append((name, repo))
    return out


def live(server: ServerProcess) -> set[str]:
    return {r["name"] for r in server.get("/api/runners") if r["live"]}


def git_head(repo: Path) -> str:
    return subprocess.check_output(["git", "-C", str(repo), "rev-parse", "HEAD"], text=True).strip()


def seconds(run: dict[str, Any]) -> float:
    created = datetime.fromisoformat(str(run["created_at"]).replace("Z", "+00:00"))
    finished = datetime.fromisoformat(str(run["finished_at"]).replace("Z", "+00:00"))
    return (finished - created).total_seconds()


def round_(server: ServerProcess, apps: list[tuple[str, Path]], runs: int) -> dict[str, Any]:
    # runs of a sha, not of the branch: a newer run of the branch would supersede the queued
    shas = {name: git_head(repo) for name, repo in apps}
    started = time.monotonic()
    ids = [
        server.post(f"/api/apps/{name}/runs", {"sha": shas[name]})["id"]
        for _ in range(runs)
        for name, _ in apps
    ]

    def ended() -> list[dict[str, Any]] | None:
        got = [server.get(f"/api/runs/{i}") for i in ids]
        return got if all(r["state"] in ENDED for r in got) else None

    done = wait_for(ended, timeout=1800, interval=0.5)
    elapsed = time.monotonic() - started
    failed = [r for r in done if r["state"] != "succeeded"]
    if failed:
        raise SystemExit(f"runs failed: {json.dumps(failed[:2], indent=1)}")
    return {
        "runs": len(done),
        "per_minute": len(done) / elapsed * 60,
        "median_s": statistics.median(seconds(r) for r in done),
        "runners": sorted({str(r["runner"]) for r in done}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="runs per app per round")
    parser.add_argument("--steps", type=int, default=2, help="test steps per run")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runners-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for label in ("server alone", "two runners"):
            data = tmp / label.replace(" ", "-")
            server = ServerProcess(data, host=SERVER).start()
            started: list[Runner] = []
            try:
                apps = repos(data.parent / f"{data.name}-repos", args.apps, args.steps)
                for name, repo in apps:
                    server.add_app(name, repo)
                if label == "two runners":
                    token = server.post("/api/tokens", {"name": "bench", "role": "runner"})["token"]
                    for i, bind in enumerate(RUNNERS):
                        started.append(Runner(server, token, f"r{i + 1}", bind, tmp).start())
                    wait_for(lambda s=server: live(s) >= {"r1", "r2"}, timeout=60)
                results[label] = round_(server, apps, args.runs)
            finally:
                for runner in started:
                    runner.stop()
                server.stop()
                server.http.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    alone, runners = results["server alone"], results["two runners"]
    print(f"{args.apps} apps x {args.runs} runs, {args.steps} test steps + 1 build step each")
    print(f"{'':16}{'runs/min':>10}{'median run':>12}  ran on")
    for label, r in results.items():
        print(
            f"{label:16}{r['per_minute']:>10.1f}{r['median_s']:>11.1f}s  {', '.join(r['runners'])}"
        )
    print(f"ratio two runners / server alone: {runners['per_minute'] / alone['per_minute']:.2f}")


if __name__ == "__main__":
    main()
