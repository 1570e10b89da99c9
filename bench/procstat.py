"""CPU and memory of the conveyor processes a benchmark started under one directory, by kind.

Read from /proc: a benchmark's server, agents, routers and instances all have the
benchmark's temp dir in their command line or working directory.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from conveyor.agent.procfs import pids_under

KINDS = ("server", "agents", "routers", "instances")


def processes(root: Path) -> dict[int, str]:
    """The processes started under `root`, by pid, with their kind (one of KINDS)."""
    found = {}
    for pid in pids_under(str(root)):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"conveyor server" in line:
            found[pid] = "server"
        elif b"conveyor agent" in line:
            found[pid] = "agents"
        elif b"conveyor.router" in line:
            found[pid] = "routers"
        else:
            found[pid] = "instances"
    return found


def memory(root: Path) -> dict[str, tuple[int, int, int]]:
    """By kind: (processes, RSS kB, PSS kB). PSS shares what processes share between them."""
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pid, kind in processes(root).items():
        try:
            rss = _kb(Path(f"/proc/{pid}/status").read_text(), "VmRSS:")
            pss = _kb(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
        except OSError:
            continue
        found = kinds[kind]
        found[0] += 1
        found[1] += rss
        found[2] += pss
    return {k: (v[0], v[1], v[2]) for k, v in kinds.items()}


class CpuMeter:
    """CPU used by the processes under `root` (by kind) and by the whole machine over a span."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started = time.perf_counter()
        self.before = self._ours()
        self.machine = self._machine()

    def stop(self) -> dict[str, float]:
        """Cores used on average, by kind, plus 'machine' (every process, other users' too)."""
        elapsed = time.perf_counter() - self.started
        after = self._ours()
        used: dict[str, float] = defaultdict(float)
        for pid, (kind, seconds) in after.items():
            # a process that started during the span counts from zero; one that ended is lost
            used[kind] += seconds - self.before.get(pid, (kind, 0.0))[1]
        busy, total = (a - b for a, b in zip(self._machine(), self.machine, strict=True))
        out = {kind: seconds / elapsed for kind, seconds in used.items()}
        out["machine"] = (os.cpu_count() or 1) * busy / total if total else 0.0
        return out

    def _ours(self) -> dict[int, tuple[str, float]]:
        tick = os.sysconf("SC_CLK_TCK")
        found = {}
        for pid, kind in processes(self.root).items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[pid] = (kind, (int(fields[11]) + int(fields[12])) / tick)  # utime + stime
        return found

    @staticmethod
    def _machine() -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs since boot."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)


def _kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0
