"""The tests' servers and agents forked from a pre-imported conveyor, not exec'd afresh.

A `conveyor server` spends about two seconds of CPU importing FastAPI, SQLAlchemy, Alembic,
pydantic's models and its routes before it serves anything; an agent about half a second.
A run starts ~200 servers and ~150 agents: a quarter of the suite's CPU on two cores went
to importing the same modules again. This process imports them once (per xdist worker)
and forks a child per start, which then runs `conveyor.entry.main()` with the test's
arguments, environment and log file, as `python -m conveyor ...` would (gunicorn's
"preload" does the same for its workers). What a test sees is the same: a real process
with its own pid, signals, exit status, sockets and log.

What differs, and how it is handled:
- modules read a few variables at import (IMPORT_TIME_ENV): a start that sets one of
  them to another value than this process has is exec'd as before;
- /proc/PID/cmdline and environ are this process's: the tests that look for a process
  by its command line look for routers and apps, which agents still exec;
- `CONVEYOR_TEST_ZYGOTE=0` turns it off (every start exec'd).

Protocol on stdin/stdout, one JSON object per line: a request {"id", "argv", "env",
"cwd", "stdio": [stdin, stdout, stderr file paths]} is answered {"id", "pid"} (or
{"id", "error"}); each child's end is told
{"exit": pid, "code": returncode (negative: killed by that signal), "cpu": seconds}.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from typing import Any

import conveyor

PRELOAD = (
    "conveyor.entry",
    "conveyor.server.serve",
    "conveyor.server.app",
    "conveyor.agent.main",
)
# read by conveyor's modules when they are imported (deploy/stepping.py, provisioning.py)
IMPORT_TIME_ENV = (
    "CONVEYOR_OFFLINE_GRACE",
    "CONVEYOR_ENROL_TIMEOUT",
    # typer's help and error panels
    "TERMINAL_WIDTH",
    "FORCE_COLOR",
    "PY_COLORS",
    "GITHUB_ACTIONS",
    "TYPER_USE_RICH",
    "_TYPER_FORCE_DISABLE_TERMINAL",
)


def _say(message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _child(request: dict[str, Any], keep_out: list[int]) -> None:
    """In the forked child: become `python -m conveyor ARGS`; never returns."""
    code: Any = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # stdin, stdout, stderr: files named by the request (a log: both outputs into it)
        std_in, std_out, std_err = request["stdio"]
        opened = [
            os.open(std_in or os.devnull, os.O_RDONLY),
            os.open(std_out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
        ]
        if std_err != std_out:
            opened.append(os.open(std_err, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        os.dup2(opened[0], 0)
        os.dup2(opened[1], 1)
        os.dup2(opened[-1] if std_err != std_out else opened[1], 2)
        for fd in (*opened, *keep_out):
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        os.chdir(request["cwd"])
        random.seed()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    # as `python -m conveyor` sets it (that module runs the command when imported)
    sys.argv = [os.path.join(os.path.dirname(conveyor.__file__), "__main__.py"), *request["argv"]]
    try:
        from conveyor.entry import main

        main()
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    # Out without the interpreter's finalisation: tearing down every module touches every
    # object the zygote imported, and each touched page is copied (copy-on-write) — more
    # CPU than the imports saved. What an exit must do is done here: atexit's handlers
    # (logging's flush among them), the streams flushed, the exit status as Python's.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _say({"exit": pid, "code": code, "cpu": usage.ru_utime + usage.ru_stime})


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    assert threading.active_count() == 1, threading.enumerate()  # fork needs one thread
    # what is imported stays: out of the collector's sight, so that a child's collections
    # do not write to (and so copy) the pages it shares with this process
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_r], [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        _reap()
        if 0 not in ready:
            continue
        data = os.read(0, 1 << 16)
        if not data:
            return  # the worker went away; its children were its own to stop
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            try:
                pid = os.fork()
            except OSError as exc:
                _say({"id": request["id"], "error": str(exc)})
                continue
            if pid == 0:
                _child(request, [wake_r, wake_w])
            _say({"id": request["id"], "pid": pid})


if __name__ == "__main__":
    main()
