"""The pipeline's own overhead: wall time of runs whose steps are `true`.

Measured side by side in one run, against doing the same work by hand
(git clone of the commit + `true` + tar of the tree), so the ratio says what
conveyor adds on this machine, whatever its speed today.

    make bench        (or: uv run python bench/pipeline_overhead.py --runs 20)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from conveyor.client import Client
from conveyor.demo import wait_healthy
from conveyor.demo.hosts import conveyor_process
from conveyor.demo.sample import git
from conveyor.protocol import RunOut

CONFIG = """app: bench
test:
  - run: "true"
build:
  - run: "true"
"""


def by_hand(repo: Path, work: Path) -> float:
    started = time.perf_counter()
    target = work / f"w{time.monotonic_ns()}"
    subprocess.run(["git", "clone", "-q", str(repo), str(target)], check=True)
    subprocess.run(["bash", "-c", "true"], cwd=target, check=True)
    subprocess.run(["bash", "-c", "true"], cwd=target, check=True)
    subprocess.run(
        ["tar", "czf", str(target) + ".tgz", "--exclude=.git", "."], cwd=target, check=True
    )
    return time.perf_counter() - started


def make_repo(repo: Path, files: dict[str, str]) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ended(client: Client, run_id: int, timeout: float = 30) -> RunOut:
    """Look at the run every 5 ms until it ends."""
    deadline = time.monotonic() + timeout
    while (run := client.run(run_id)).state in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} still {run.state} after {timeout:g}s")
        time.sleep(0.005)
    return run


def webhook_latency(client: Client, repo: Path, count: int) -> list[float]:
    """Time signed GitHub pushes to their 202: the webhook must answer well within 1 s."""
    secret = client.webhook("bench").webhook_secret
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    times = []
    with httpx.Client(base_url=client.server) as http:
        for _ in range(count):
            headers = {
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": signature,
            }
            started = time.perf_counter()
            r = http.post("/hooks/github/bench", content=body, headers=headers)
            times.append(time.perf_counter() - started)
            assert r.status_code == 202, r.text
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        make_repo(repo, {"conveyor.yml": CONFIG, "app.py": "print('hello')\n" * 200})
        token = "cvy_bench_" + secrets.token_urlsafe(16)
        url = f"http://127.0.0.1:{free_port()}"
        server = conveyor_process(
            ["server", "--data", str(root / "data"), "--listen", url.removeprefix("http://")],
            root / "server.log",
            {**os.environ, "CONVEYOR_ADMIN_TOKEN": token},
        )
        try:
            wait_healthy(url, server)
            client = Client(url, token)
            client.add_app({"name": "bench", "repo": str(repo)})
            conveyor_times, hand_times, api_times = [], [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                run = client.post("/api/apps/bench/runs", {})  # no Idempotency-Key, as before
                api_times.append(time.perf_counter() - started)
                done = ended(client, run["id"])
                elapsed = time.perf_counter() - started
                assert done.state == "succeeded", done
                conveyor_times.append(elapsed)
                hand_times.append(by_hand(repo, root))
            hook_times = webhook_latency(client, repo, args.runs)
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
    med_c = statistics.median(conveyor_times)
    med_h = statistics.median(hand_times)
    print(f"runs measured:                  {args.runs} (steps: test `true`, build `true`)")
    print(
        f"conveyor run, request -> ended: median {med_c * 1000:7.1f} ms"
        f"  (p90 {sorted(conveyor_times)[int(0.9 * len(conveyor_times)) - 1] * 1000:.1f} ms)"
    )
    print(f"same work by hand (clone+tar):  median {med_h * 1000:7.1f} ms")
    print(f"POST /api/apps/bench/runs:      median {statistics.median(api_times) * 1000:7.1f} ms")
    print(
        f"signed GitHub push -> 202:      median {statistics.median(hook_times) * 1000:7.1f} ms"
        f"  (max {max(hook_times) * 1000:.1f} ms; the goal is well under 1 s)"
    )
    print(
        f"overhead ratio conveyor/by-hand: {med_c / med_h:.2f}x"
        f"  (pipeline's own cost: {(med_c - med_h) * 1000:.0f} ms per run)"
    )


if __name__ == "__main__":
    main()
