"""Starting the tests' servers and agents through testbed/zygote.py (see there why).

`start(args, env, log)` returns a process handle with Popen's interface as the tests use
it (pid, poll, wait, returncode, send_signal, terminate, kill), or None when this start
must be exec'd as before (turned off, another interpreter, an import-time variable that
differs, or the zygote could not be started).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from testbed.zygote import IMPORT_TIME_ENV

COMMANDS = ("server", "agent")  # what the zygote pre-imports
OFF_ENV = "CONVEYOR_TEST_ZYGOTE"


class ForkedProcess:
    """A child of the zygote: Popen's interface, its end reported by the zygote."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote = zygote
        self.pid = pid
        self.args: list[str] = []

    @property
    def returncode(self) -> int | None:
        return self._zygote.ended.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._zygote.changed:
            if not self._zygote.changed.wait_for(lambda: self.returncode is not None, timeout):
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        code = self.returncode
        assert code is not None
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """One per test process (xdist worker), started at its first use."""

    def __init__(self) -> None:
        # without COLUMNS and LINES: rich's consoles, made at import, then read them at
        # each use (given at import, they keep that width for good)
        dropped = (*IMPORT_TIME_ENV, "COLUMNS", "LINES")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.lock = threading.Lock()
        self.changed = threading.Condition()
        self.ended: dict[int, int] = {}
        self.answers: dict[int, dict[str, Any]] = {}
        self.cpu = 0.0  # seconds of CPU of the children that ended
        self.ids = itertools.count()
        self.reader = threading.Thread(target=self._read, name="zygote", daemon=True)
        self.reader.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Let it go (it ends when its input does) and collect it."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)  # it reads to the end, then the pipe is closed
        if self.proc.stdout is not None and not self.reader.is_alive():
            self.proc.stdout.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.changed:
                if "exit" in message:
                    self.ended[int(message["exit"])] = int(message["code"])
                    self.cpu += float(message["cpu"])
                else:
                    self.answers[int(message["id"])] = message
                self.changed.notify_all()
        with self.changed:  # the zygote died: nothing more will be told
            self.answers[-1] = {"error": "zygote ended"}
            self.changed.notify_all()

    def fork(
        self,
        args: list[str],
        env: dict[str, str],
        stdio: tuple[str | None, str, str],
        cwd: Path | None = None,
    ) -> ForkedProcess | None:
        request_id = next(self.ids)
        request = {
            "id": request_id,
            "argv": args,
            "env": env,
            "cwd": str(cwd or os.getcwd()),
            "stdio": stdio,
        }
        with self.lock:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                return None
        with self.changed:
            done = self.changed.wait_for(
                lambda: request_id in self.answers or -1 in self.answers, timeout=30
            )
            answer = self.answers.pop(request_id, None) if done else None
        if answer is None or "pid" not in answer:
            return None
        process = ForkedProcess(self, int(answer["pid"]))
        process.args = args
        return process


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def zygote() -> Zygote | None:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            try:
                _zygote = Zygote()
            except OSError:
                return None
        return _zygote


def _forkable(args: list[str], env: dict[str, str]) -> Zygote | None:
    if os.environ.get(OFF_ENV, "1") == "0" or env.get(OFF_ENV) == "0":
        return None
    if args[:3] != [sys.executable, "-m", "conveyor"]:
        return None
    z = zygote()
    if z is None or any(env.get(k) != z.env.get(k) for k in IMPORT_TIME_ENV):
        return None
    return z


def start(args: list[str], env: dict[str, str], log: Path) -> ForkedProcess | None:
    """`args` (python -m conveyor server|agent ...) forked from the zygote, if it can be;
    its output appended to `log`."""
    if len(args) < 4 or args[3] not in COMMANDS:
        return None
    z = _forkable(args, env)
    return z.fork(args[3:], env, (None, str(log), str(log))) if z else None


def run(
    args: list[str], env: dict[str, str], input: str | None, timeout: float, cwd: Path | None
) -> subprocess.CompletedProcess[str] | None:
    """`subprocess.run(args, capture_output=True, text=True)` for `python -m conveyor ...`,
    forked from the zygote; None when it must be exec'd."""
    z = _forkable(args, env)
    if z is None:
        return None
    with tempfile.TemporaryDirectory(prefix="conveyor-cli-") as tmp:
        std_in, std_out, std_err = (os.path.join(tmp, n) for n in ("in", "out", "err"))
        Path(std_in).write_text(input or "")
        process = z.fork(args[3:], env, (std_in, std_out, std_err), cwd)
        if process is None:
            return None
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise
        out, err = (Path(p).read_text() if os.path.exists(p) else "" for p in (std_out, std_err))
    return subprocess.CompletedProcess(args, code, out, err)


def reaped_cpu() -> float:
    """CPU seconds of the forked children that ended (for CONVEYOR_TEST_CPU)."""
    return _zygote.cpu if _zygote is not None else 0.0
