"""Running a load test: the Locust child process (load/runner.py), read line by line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

from conveyor.load.wire import LoadPlan, LoadSample, LoadSummary

GRACE = 60.0  # seconds past the test's duration before a silent child is killed


class LoadError(Exception):
    """The load generator could not run: says why."""


async def drive(plan: LoadPlan) -> tuple[list[LoadSample], LoadSummary]:
    """Run one load test; its samples (one a second) and the engine's summary."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor.load.runner",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(plan.model_dump_json().encode()), timeout=plan.duration + GRACE
        )
    except TimeoutError:
        _kill(proc.pid)
        await proc.wait()
        raise LoadError(
            f"the load generator did not finish within {plan.duration + GRACE:g} s"
        ) from None
    except asyncio.CancelledError:
        _kill(proc.pid)
        raise
    samples: list[LoadSample] = []
    summary: LoadSummary | None = None
    for line in out.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if "sample" in item:
                samples.append(LoadSample.model_validate(item["sample"]))
            elif "summary" in item:
                summary = LoadSummary.model_validate(item["summary"])
    if proc.returncode != 0 or summary is None:
        tail = err.decode(errors="replace").strip()[-1500:]
        raise LoadError(
            f"the load generator failed (exit {proc.returncode})" + (f": {tail}" if tail else "")
        )
    return samples, summary


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
