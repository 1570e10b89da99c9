"""The pipeline's own overhead: wall time of runs whose steps are `true`.

Measured side by side in one run, against doing the same work by hand
(git clone of the commit + `true` + tar of the tree), so the ratio says what
conveyor adds on this machine, whatever its speed today.

    make bench        (or: uv run python bench/pipeline_overhead.py --runs 20)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import ServerProcess, make_repo, wait_for

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        make_repo(repo, {"conveyor.yml": CONFIG, "app.py": "print('hello')\n" * 200})
        server = ServerProcess(root / "data").start()
        try:
            server.add_app("bench", repo)
            conveyor_times, hand_times, api_times = [], [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                run = server.post("/api/apps/bench/runs", {})
                api_times.append(time.perf_counter() - started)
                done = wait_for(
                    lambda rid=run["id"]: (
                        (r := server.get(f"/api/runs/{rid}"))["state"] not in ("queued", "running")
                        and r
                    ),
                    interval=0.005,
                )
                elapsed = time.perf_counter() - started
                assert done["state"] == "succeeded", done
                conveyor_times.append(elapsed)
                hand_times.append(by_hand(repo, root))
        finally:
            server.stop()
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
        f"overhead ratio conveyor/by-hand: {med_c / med_h:.2f}x"
        f"  (pipeline's own cost: {(med_c - med_h) * 1000:.0f} ms per run)"
    )


if __name__ == "__main__":
    main()
