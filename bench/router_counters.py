"""The router's per-request counting cost: the fine latency buckets against the legacy ones.

Both layouts count the same latencies with the same code (conveyor.router.metrics.Counters,
and the HAProxy driver's bucket_index), in alternating rounds, timed in CPU time so that
other processes on a loaded machine weigh less than in a wall-clock bench (router_cost.py).

    uv run python bench/router_counters.py [--requests 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import conveyor.router.metrics as metrics
from conveyor.protocol import LATENCY_BUCKETS, LEGACY_LATENCY_BUCKETS

LAYOUTS = {"legacy": LEGACY_LATENCY_BUCKETS, "fine": LATENCY_BUCKETS}


def count(bounds: tuple[float, ...], latencies: list[float], statuses: list[int]) -> float:
    """CPU seconds per request of Counters.observe with these bounds."""
    metrics.LATENCY_BUCKETS = bounds  # observe() reads the module's name at each call
    metrics._NBUCKETS = len(bounds)
    counters = metrics.Counters()
    started = time.process_time()
    for status, latency in zip(statuses, latencies, strict=True):
        counters.observe(status, latency)
    return (time.process_time() - started) / len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(1)
    latencies = [rng.lognormvariate(math.log(0.03), 1.0) for _ in range(args.requests)]
    statuses = [500 if rng.random() < 0.01 else 200 for _ in range(args.requests)]
    seen: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for _ in range(args.rounds):
        for name, bounds in LAYOUTS.items():
            seen[name].append(count(bounds, latencies, statuses))
    legacy, fine = (statistics.median(seen[name]) for name in LAYOUTS)
    print(f"Counters.observe, {args.requests} lognormal latencies, median of {args.rounds} rounds:")
    for name, bounds in LAYOUTS.items():
        print(f"  {name:7} {len(bounds):3} bounds  {statistics.median(seen[name]) * 1e9:6.0f} ns")
    print(f"  fine / legacy: {fine / legacy:.3f}x, +{(fine - legacy) * 1e9:.0f} ns a request")
    with open("/proc/loadavg") as f:
        print(f"  load average: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
