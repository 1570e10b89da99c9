"""The load-generating child process: Locust as a library, paced to a request rate.

Run as `python -m conveyor.load.runner` with a LoadPlan (JSON) on stdin; prints one
LoadSample a second and a LoadSummary at the end, one JSON object a line. A process of
its own because Locust patches the standard library for gevent when imported, which
the server's asyncio loop must never see.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import threading
import time
from collections import Counter
from itertools import count
from typing import Any

# seconds between two requests of one simulated user: answers up to this slow keep the rate
# (a user waits for its answer; a slower one is caught up on, as far as the others allow)
PACE = 5.0
MAX_USERS = 4000  # greenlets: above it, each user sends more often


def users_for(rate: float) -> tuple[int, float]:
    """How many users, each sending a request every how many seconds, make `rate`."""
    users = min(MAX_USERS, max(1, math.ceil(rate * PACE)))
    return users, users / rate


def main() -> None:
    # imported here: importing locust patches sockets, threads and time.sleep for gevent
    from locust import FastHttpUser, task
    from locust.env import Environment

    from conveyor.load.wire import Counting, LoadPlan, LoadSample, LoadSummary

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # all users start at once on purpose (each waits for its phase): not worth a warning
    logging.getLogger("locust.runners").setLevel(logging.ERROR)
    plan = LoadPlan.model_validate_json(sys.stdin.read())
    users, pace = users_for(plan.rate)
    urls = [t.rstrip("/") + p for t in plan.targets for p in plan.paths]
    turn = count()
    spawned = count()
    headers = {"Host": plan.host_header} if plan.host_header else {}

    class Visitor(FastHttpUser):
        host = plan.targets[0]
        network_timeout = plan.request_timeout
        connection_timeout = plan.request_timeout

        next_at = 0.0

        def on_start(self) -> None:
            # each user at its own phase of the pace, one in each of `users` equal slices:
            # requests arrive evenly (not in bursts), and as many as asked in any duration
            self.next_at = started + (next(spawned) + random.random()) * pace / users
            time.sleep(max(0.0, self.next_at - time.monotonic()))

        def wait_time(self) -> float:
            # on a schedule, not after each answer: a slow answer is caught up on, so the
            # rate holds (locust's constant_pacing sends a user's first two at once)
            self.next_at += pace
            return max(0.0, self.next_at - time.monotonic())

        @task
        def visit(self) -> None:
            if time.monotonic() - started >= plan.duration:
                return  # over: no new request; the ones in flight finish
            url = urls[next(turn) % len(urls)]
            flying[0] += 1
            try:
                self.client.get(url, headers=headers, name=url)
            finally:
                flying[0] -= 1

    counting = Counting()
    flying = [0]  # requests in flight
    kinds: Counter[str] = Counter()

    def on_request(response_time: float, exception: Any = None, **_: Any) -> None:
        counting.add(response_time / 1000.0, exception is not None)
        if exception is None:
            return
        kind = str(exception)[:200]
        if kind in kinds or len(kinds) < 5:  # the first kinds are evidence enough
            kinds[kind] += 1

    env = Environment(user_classes=[Visitor])
    env.events.request.add_listener(on_request)  # type: ignore[no-untyped-call]
    runner = env.create_local_runner()

    def emit(line: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def sample() -> None:
        at = time.monotonic() - started
        emit({"sample": LoadSample(at=at, counters=counting.counters()).model_dump()})

    done = threading.Event()  # gevent's, like the threads: locust patched them

    def every_second() -> None:
        while not done.wait(1.0):
            sample()

    started = time.monotonic()
    runner.start(users, spawn_rate=users)  # all at once; on_start spreads them
    ticker = threading.Thread(target=every_second, daemon=True)
    ticker.start()
    time.sleep(plan.duration)
    end = time.monotonic() + plan.request_timeout
    while flying[0] and time.monotonic() < end:
        time.sleep(0.01)
    runner.quit()
    done.set()
    ticker.join()
    sample()
    seconds = plan.duration
    total = env.stats.total

    def pct(q: float) -> float | None:
        return total.get_response_time_percentile(q) / 1000.0 if total.num_requests else None

    summary = LoadSummary(
        requests=counting.requests,
        failures=counting.errors,
        seconds=seconds,
        rate=counting.requests / seconds if seconds > 0 else 0.0,
        p50=pct(0.5),
        p95=pct(0.95),
        p99=pct(0.99),
        errors=dict(kinds),
    )
    emit({"summary": summary.model_dump()})


if __name__ == "__main__":
    main()
