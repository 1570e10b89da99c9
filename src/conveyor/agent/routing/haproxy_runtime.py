"""Talking to HAProxy: the Runtime API (stats socket), the master CLI, and the process itself."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.agent.routing.haproxy_config import Paths, app_of_backend
from conveyor.agent.routing.spec import RouterError

CLI_TIMEOUT = 5.0
MIN_VERSION = (2, 4)  # prepare/commit map, use-server with a log-format name

# Responses of "set server ... addr" that are not errors.
_ADDR_OK = ("changed from", "no need to change")


@dataclass(frozen=True)
class ServerRow:
    """One line of `show stat` for a server.

    requests: requests sent to it (req_tot; a connection that failed sent none).
    connect_failures: every failed connection attempt, whether HAProxy then retried
    it (wretr), sent it to another server (wredis) or gave up (econ)."""

    backend: str
    server: str
    scur: int
    requests: int
    hrsp_5xx: int
    connect_failures: int
    status: str
    weight: int


@dataclass
class ProcInfo:
    """`show proc` on the master CLI."""

    master_pid: int
    reloads: int
    failed: int
    uptime: float
    workers: list[int] = field(default_factory=list)
    old_workers: list[int] = field(default_factory=list)


async def cli(path: Path, command: str, timeout: float = CLI_TIMEOUT) -> str:
    """Send one command on a HAProxy CLI socket and return the whole answer."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(command.encode() + b"\n")
                # The master CLI answers only once it sees the end of the request.
                writer.write_eof()
                data = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise RouterError(
            f"HAProxy does not answer on {path}: {exc or type(exc).__name__}"
        ) from exc
    return data.decode(errors="replace")


async def runtime(paths: Paths, command: str) -> None:
    """Run a Runtime API command that answers nothing when it succeeds."""
    answer = (await cli(paths.admin_sock, command)).strip()
    if answer and not (command.startswith("set server") and answer.startswith(_ADDR_OK)):
        raise RouterError(f"HAProxy refused {command!r}: {answer}")


async def replace_map(paths: Paths, path: Path, entries: list[tuple[str, str]]) -> None:
    """Replace a map's entries atomically (prepare a version, fill it, commit it)."""
    answer = await cli(paths.admin_sock, f"prepare map {path}")
    version = answer.rsplit(":", 1)[-1].strip()
    if "New version created" not in answer or not version.isdigit():
        raise RouterError(f"HAProxy refused 'prepare map {path}': {answer.strip()}")
    for key, value in entries:
        await runtime(paths, f"add map @{version} {path} {key} {value}")
    await runtime(paths, f"commit map @{version} {path}")


def parse_stat(text: str) -> list[ServerRow]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise RouterError(f"unexpected answer to 'show stat': {text[:200]!r}")
    rows = []
    for rec in csv.DictReader([lines[0][2:], *lines[1:]]):
        if rec.get("svname") in ("FRONTEND", "BACKEND") or rec.get("type") != "2":
            continue
        rows.append(
            ServerRow(
                backend=rec["pxname"],
                server=rec["svname"],
                scur=_int(rec["scur"]),
                # req_tot of servers exists since HAProxy 2.4; stot also counts failed connects
                requests=_int(rec["req_tot"] if "req_tot" in rec else rec["stot"]),
                hrsp_5xx=_int(rec["hrsp_5xx"]),
                connect_failures=_int(rec["econ"]) + _int(rec["wretr"]) + _int(rec["wredis"]),
                status=rec["status"],
                weight=_int(rec["weight"]),
            )
        )
    return rows


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


_UPTIME = re.compile(r"(\d+)d(\d+)h(\d+)m(\d+)s")


def parse_proc(text: str) -> ProcInfo:
    info: ProcInfo | None = None
    section = "master"
    for line in text.splitlines():
        if line.startswith("#<"):
            continue  # the column titles
        if line.startswith("#"):
            section = {"# workers": "workers", "# old workers": "old"}.get(line.strip(), "other")
            continue
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        pid = int(fields[0])
        if section == "master" and len(fields) > 2 and fields[1] == "master":
            failed = re.search(r"failed: (\d+)", line)
            up = _UPTIME.search(line)
            uptime = 0.0
            if up:
                d, h, m, s = (int(x) for x in up.groups())
                uptime = float(((d * 24 + h) * 60 + m) * 60 + s)
            info = ProcInfo(pid, int(fields[2]), int(failed.group(1)) if failed else 0, uptime)
        elif info is not None and section == "workers":
            info.workers.append(pid)
        elif info is not None and section == "old":
            info.old_workers.append(pid)
    if info is None:
        raise RouterError(f"unexpected answer to 'show proc': {text[:200]!r}")
    return info


async def show_proc(paths: Paths) -> ProcInfo:
    return parse_proc(await cli(paths.master_sock, "show proc"))


async def server_rows(paths: Paths, proc: ProcInfo) -> dict[int, list[ServerRow]]:
    """Server counters of every live worker: the current one and those finishing old work."""
    rows: dict[int, list[ServerRow]] = {}
    for pid in proc.workers:
        rows[pid] = parse_stat(await cli(paths.admin_sock, "show stat -1 4 -1"))
    for pid in proc.old_workers:
        with contextlib.suppress(RouterError):  # it may leave while we ask
            rows[pid] = parse_stat(await cli(paths.master_sock, f"@!{pid} show stat -1 4 -1"))
    return rows


def connect_failures(rows: Mapping[int, list[ServerRow]]) -> dict[int, list[tuple[str, str, int]]]:
    """(app, slot, connection failures) per worker, for `credit`."""
    return {
        pid: [
            (app, r.server, r.connect_failures)
            for r in worker
            if (app := app_of_backend(r.backend))
        ]
        for pid, worker in rows.items()
    }


def in_flight(rows: Mapping[int, list[ServerRow]]) -> dict[str, dict[str, int]]:
    """Requests in progress per app and slot, summed over the workers."""
    busy: dict[str, dict[str, int]] = {}
    for worker in rows.values():
        for r in worker:
            app = app_of_backend(r.backend)
            if app is not None:
                slots = busy.setdefault(app, {})
                slots[r.server] = slots.get(r.server, 0) + r.scur
    return busy


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def check_version(binary: str) -> str:
    try:
        rc, out = await _run(binary, "-v")
    except OSError as exc:
        raise RouterError(
            f"cannot run {binary!r} ({exc.strerror}): install HAProxy 2.4 or newer "
            "(scripts/setup.sh does) or use --router embedded"
        ) from exc
    found = re.search(r"version (\d+)\.(\d+)", out)
    if rc != 0 or not found:
        raise RouterError(f"{binary} -v: unexpected output: {out.strip()[:200]}")
    version = (int(found.group(1)), int(found.group(2)))
    if version < MIN_VERSION:
        raise RouterError(
            f"HAProxy {found.group(1)}.{found.group(2)} is too old: 2.4 or newer needed"
        )
    return f"{version[0]}.{version[1]}"


async def validate(binary: str, config: Path) -> None:
    rc, out = await _run(binary, "-c", "-q", "-f", str(config))
    if rc != 0:
        raise RouterError(f"HAProxy rejects the configuration: {_alerts(out)}")


def _alerts(out: str) -> str:
    alerts = [line.split(":", 2)[-1].strip() for line in out.splitlines() if "ALERT" in line]
    return "; ".join(alerts) or out.strip()[-500:]


async def launch(binary: str, paths: Paths) -> None:
    """Start HAProxy as a daemon master in its own session; it outlives the agent."""
    with open(paths.log, "ab") as log:
        offset = log.tell()
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-W",
            "-D",
            "-S",
            f"{paths.master_sock},mode,600",
            "-f",
            str(paths.config),
            "-p",
            str(paths.pidfile),
            cwd=str(paths.workdir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    # The launcher exits once the master has bound every listener, or failed to.
    rc = await proc.wait()
    if rc != 0:
        raise RouterError(f"HAProxy did not start: {_alerts(_tail(paths.log, offset))}")


def _tail(path: Path, offset: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(20_000).decode(errors="replace")


async def wait_ready(paths: Paths, timeout: float = 10.0) -> ProcInfo:
    """Wait until the master lists a worker and that worker answers on the stats socket."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            proc = await show_proc(paths)
            if proc.workers:
                info = await cli(paths.admin_sock, "show info", timeout=2.0)
                if f"\nPid: {proc.workers[0]}\n" in f"\n{info}":
                    return proc
        except RouterError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise RouterError(f"HAProxy did not become ready within {timeout:g}s: {last}")


async def reload(paths: Paths, timeout: float = 15.0) -> ProcInfo:
    """Seamless reload through the master: listeners pass to the new worker, the old one
    finishes its requests. Raises if the master kept the old worker (reload failed)."""
    before = await show_proc(paths)
    offset = paths.log.stat().st_size if paths.log.exists() else 0
    with contextlib.suppress(RouterError):  # the master closes the connection as it re-executes
        await cli(paths.master_sock, "reload")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        try:
            proc = await show_proc(paths)
        except RouterError:
            continue
        if proc.reloads <= before.reloads:
            continue
        if proc.failed > 0 or not set(proc.workers) - set(before.workers):
            why = _alerts(_tail(paths.log, offset)) or "its new worker did not start"
            raise RouterError(f"HAProxy reload failed: {why}")
        return await wait_ready(paths, timeout=max(1.0, deadline - time.monotonic()))
    raise RouterError(f"HAProxy did not reload within {timeout:g}s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_our_haproxy(pid: int, paths: Paths) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(paths.config).encode() in cmdline


async def terminate(pid: int, paths: Paths, grace: float) -> None:
    """Soft-stop the master (in-flight requests finish), then insist."""
    for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if not is_our_haproxy(pid, paths):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid) or not is_our_haproxy(pid, paths):
                return
            await asyncio.sleep(0.05)
    raise RouterError(f"HAProxy master {pid} does not stop")
